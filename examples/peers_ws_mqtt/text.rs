//! Text-valued options on top of `common::cli`, which takes numbers and
//! flags only.
//!
//! An example lists its text options (`--ca FILE`, `--topic T`) in its
//! `Spec::extra` like any other, so `--help` shows them, and names them in
//! the `text` argument of [`main`] / [`parse`]. They are taken out of the
//! command line before `common::cli::parse` sees it and kept for the thread
//! that parsed them (the one that then calls the example's `run`); [`get`]
//! reads them back, falling back to the `Spec` default. A `run` called some
//! other way (the suite) sees the defaults.
//!
//! When `common::cli` learns text options this module goes away: `get`
//! becomes an `Opts` method.

use std::cell::RefCell;

use crate::common::cli::{self, Opts, Spec};
use crate::common::RunFn;

thread_local! {
    static TEXT: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Text option values: `(name, value)` pairs.
pub type TextValues = Vec<(String, String)>;

/// Split the text options named in `text` (`--name VALUE` or `--name=VALUE`)
/// out of `args`; returns the remaining arguments and the text values.
pub fn split(
    text: &[&str],
    args: impl IntoIterator<Item = String>,
) -> Result<(Vec<String>, TextValues), String> {
    let mut rest = Vec::new();
    let mut values = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if text.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            values.push((name, value));
        } else {
            rest.push(arg);
        }
    }
    Ok((rest, values))
}

/// Set text option `name` for runs on this thread.
pub fn set(name: &str, value: &str) {
    TEXT.with(|t| {
        let mut t = t.borrow_mut();
        t.retain(|(n, _)| n != name);
        t.push((name.to_string(), value.to_string()));
    });
}

/// Forget every text option set on this thread.
pub fn clear() {
    TEXT.with(|t| t.borrow_mut().clear());
}

/// Text option `name`: the value given on this thread, else the `Spec`
/// default. Panics if `spec` has no such option (a programming error).
pub fn get(spec: &Spec, name: &str) -> String {
    let given = TEXT.with(|t| {
        t.borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    });
    given.unwrap_or_else(|| {
        spec.extra
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{} has no option {name}", spec.name))
            .default
            .to_string()
    })
}

/// Like [`get`], with `"none"` (the default of optional text options)
/// meaning not given.
pub fn get_opt(spec: &Spec, name: &str) -> Option<String> {
    Some(get(spec, name)).filter(|v| v != "none" && !v.is_empty())
}

/// Parse a command line with text options: the text values are set for
/// this thread (see [`set`]), the rest goes through `common::cli::parse`.
/// `Ok(None)` means `--help` was asked for.
pub fn parse(
    spec: &Spec,
    text: &[&str],
    args: impl IntoIterator<Item = String>,
) -> Result<Option<Opts>, String> {
    let (rest, values) = split(text, args)?;
    clear();
    for (n, v) in &values {
        set(n, v);
    }
    cli::parse(spec, rest)
}

/// `common::main` for an example with text options `text`: parse, build the
/// network, run, report, exit (0 on success, 1 on failure, 2 on bad usage).
pub fn main(spec: &Spec, run: RunFn, text: &[&str]) -> ! {
    crate::common::run_parsed(spec, parse(spec, text, std::env::args().skip(1)), run)
}
