//! The fd table every backend shares.
//!
//! A fixed array of slots (no allocation). Each slot carries a generation
//! that changes when it is freed, and [`Sockfd`] encodes it, so an fd kept
//! after `close` is rejected instead of reaching the socket that reuses the
//! slot. Backends store their per-socket state as `T`.

use crate::error::{Error, Result};
use crate::types::Sockfd;

struct Slot<T> {
    generation: u16,
    value: Option<T>,
}

/// Up to `N` (at most 256) open sockets, each holding a backend value `T`.
pub struct FdTable<T, const N: usize> {
    slots: [Slot<T>; N],
    /// Where the next search for a free slot starts, so freed slots are
    /// reused last (round robin) and stale fds age out quickly.
    next: usize,
}

impl<T, const N: usize> Default for FdTable<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> FdTable<T, N> {
    const CHECK: () = assert!(N > 0 && N <= 256, "fd table holds 1..=256 sockets");

    /// An empty table.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let _ = Self::CHECK;
        FdTable {
            slots: core::array::from_fn(|_| Slot {
                generation: 0,
                value: None,
            }),
            next: 0,
        }
    }

    /// Capacity.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of open fds.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.value.is_some()).count()
    }

    /// Whether no fd is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a new fd can be allocated.
    pub fn has_room(&self) -> bool {
        self.slots.iter().any(|s| s.value.is_none())
    }

    /// Store `value` under a new fd, or `NoMoreSockets`.
    pub fn insert(&mut self, value: T) -> Result<Sockfd> {
        for k in 0..N {
            let i = (self.next + k) % N;
            let slot = &mut self.slots[i];
            if slot.value.is_none() {
                slot.value = Some(value);
                self.next = (i + 1) % N;
                return Ok(Sockfd::new(i as u8, slot.generation));
            }
        }
        Err(Error::NoMoreSockets)
    }

    fn slot(&self, fd: Sockfd) -> Result<&Slot<T>> {
        let slot = self.slots.get(fd.index()).ok_or(Error::InvalidSockfd)?;
        if fd.raw() < 0 || slot.generation != fd.generation() || slot.value.is_none() {
            return Err(Error::InvalidSockfd);
        }
        Ok(slot)
    }

    /// The value for an open fd.
    pub fn get(&self, fd: Sockfd) -> Result<&T> {
        self.slot(fd).map(|s| s.value.as_ref().expect("checked"))
    }

    /// The value for an open fd, mutably.
    pub fn get_mut(&mut self, fd: Sockfd) -> Result<&mut T> {
        self.slot(fd)?;
        Ok(self.slots[fd.index()].value.as_mut().expect("checked"))
    }

    /// Close an fd and return its value; the fd is dead from now on.
    pub fn remove(&mut self, fd: Sockfd) -> Result<T> {
        self.slot(fd)?;
        let slot = &mut self.slots[fd.index()];
        slot.generation = (slot.generation + 1) & 0x7fff;
        Ok(slot.value.take().expect("checked"))
    }

    /// Iterate over open fds and their values.
    pub fn iter(&self) -> impl Iterator<Item = (Sockfd, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value
                .as_ref()
                .map(|v| (Sockfd::new(i as u8, s.generation), v))
        })
    }

    /// Iterate mutably over open fds and their values.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Sockfd, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let g = s.generation;
            s.value.as_mut().map(|v| (Sockfd::new(i as u8, g), v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_fd_never_reaches_new_socket() {
        let mut t: FdTable<u32, 2> = FdTable::new();
        let a = t.insert(1).unwrap();
        let b = t.insert(2).unwrap();
        assert_eq!(t.insert(3), Err(Error::NoMoreSockets));
        assert_eq!(t.remove(a), Ok(1));
        assert_eq!(t.remove(a), Err(Error::InvalidSockfd));
        let c = t.insert(3).unwrap();
        assert_eq!(c.index(), a.index());
        assert_ne!(c, a);
        assert_eq!(t.get(a), Err(Error::InvalidSockfd));
        assert_eq!(t.get(c), Ok(&3));
        assert_eq!(t.get(b), Ok(&2));
        assert_eq!(t.get(Sockfd::from_raw(-1)), Err(Error::InvalidSockfd));
        assert_eq!(t.get(Sockfd::from_raw(0xff)), Err(Error::InvalidSockfd));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn generation_wraps_without_panic() {
        let mut t: FdTable<(), 1> = FdTable::new();
        for _ in 0..70_000 {
            let fd = t.insert(()).unwrap();
            t.remove(fd).unwrap();
        }
    }
}
