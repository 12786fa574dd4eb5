//! Splitting an AT command line into name, type and parameters.

/// One parameter of a set command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A quoted string (escapes removed).
    Str(String),
    /// A decimal integer.
    Int(i64),
    /// Omitted (`,,`).
    Empty,
}

impl Arg {
    /// The integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Arg::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn str(&self) -> Option<&str> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The four command types of the AT command set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `AT+X=?`
    Test,
    /// `AT+X?`
    Query,
    /// `AT+X=<...>`
    Set(Vec<Arg>),
    /// `AT+X`
    Execute,
}

/// A parsed command: `name` is what follows `AT` (`"+CIPSEND"`, `"E0"`, `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub name: String,
    pub kind: Kind,
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// It does not start with `AT` (ERR CODE subcategory 0x03).
    NoAt,
    /// A parameter does not parse (subcategory 0x08).
    Param,
}

/// Parse one command line (without CR LF).
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.len() < 2 || !text[..2].eq_ignore_ascii_case("AT") {
        return Err(ParseError::NoAt);
    }
    let rest = &text[2..];
    let name_end = rest.find(['=', '?']).unwrap_or(rest.len());
    let name = rest[..name_end].to_ascii_uppercase();
    let tail = &rest[name_end..];
    let kind = if tail.is_empty() {
        Kind::Execute
    } else if tail == "?" {
        Kind::Query
    } else if tail == "=?" {
        Kind::Test
    } else if let Some(p) = tail.strip_prefix('=') {
        Kind::Set(params(p)?)
    } else {
        return Err(ParseError::Param);
    };
    Ok(Command { name, kind })
}

/// Split `a,"b\,c",,3` into parameters.
fn params(s: &str) -> Result<Vec<Arg>, ParseError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        // One parameter.
        match chars.peek() {
            None => {
                out.push(Arg::Empty);
                break;
            }
            Some(',') => out.push(Arg::Empty),
            Some('"') => {
                chars.next();
                let mut v = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(e) => v.push(e),
                            None => return Err(ParseError::Param),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                if !closed {
                    return Err(ParseError::Param);
                }
                out.push(Arg::Str(v));
            }
            Some(_) => {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                let v = v.trim();
                let n = v.parse::<i64>().map_err(|_| ParseError::Param)?;
                out.push(Arg::Int(n));
            }
        }
        match chars.next() {
            None => break,
            Some(',') => {
                if chars.peek().is_none() {
                    out.push(Arg::Empty);
                    break;
                }
            }
            Some(_) => return Err(ParseError::Param),
        }
    }
    Ok(out)
}

/// Quote a string for a reply (`"..."`, escaping `"` and `\`).
pub(crate) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_params() {
        let c = parse(b"AT+CIPSTART=0,\"TCP\",\"127.0.0.1\",80").unwrap();
        assert_eq!(c.name, "+CIPSTART");
        assert_eq!(
            c.kind,
            Kind::Set(vec![
                Arg::Int(0),
                Arg::Str("TCP".into()),
                Arg::Str("127.0.0.1".into()),
                Arg::Int(80)
            ])
        );
        assert_eq!(parse(b"AT").unwrap().kind, Kind::Execute);
        assert_eq!(parse(b"ATE0").unwrap().name, "E0");
        assert_eq!(parse(b"AT+CIPSTA?").unwrap().kind, Kind::Query);
        assert_eq!(parse(b"AT+CWJAP=?").unwrap().kind, Kind::Test);
        let c = parse(b"AT+CWJAP=\"a\\,b\\\"c\",\"p\\\\\",,,1").unwrap();
        assert_eq!(
            c.kind,
            Kind::Set(vec![
                Arg::Str("a,b\"c".into()),
                Arg::Str("p\\".into()),
                Arg::Empty,
                Arg::Empty,
                Arg::Int(1)
            ])
        );
        assert_eq!(parse(b"XX"), Err(ParseError::NoAt));
        assert_eq!(parse(b"AT+X=\"open"), Err(ParseError::Param));
        assert_eq!(parse(b"AT+X=1a"), Err(ParseError::Param));
    }
}
