//! Fixed buffer slots shared between a backend and the kernel, and the ledger that tracks who
//! owns each one.
//!
//! Completion-based I/O (RIO on Windows, io_uring on Linux) lends buffers to the kernel: a slot
//! posted for a receive or a send belongs to the kernel until its completion comes back. The
//! [`SlotLedger`] is the one place that knows each slot's owner, so a slot can never be handed
//! out twice (only a `Free` slot can be taken), never be touched while the kernel owns it (only a
//! `Held` slot may be read or written), and never leak (every slot is in exactly one state, and
//! [`SlotLedger::balanced`] says whether all came home). A [`SlotToken`] packs a slot into the
//! 64-bit request context the kernel hands back with a completion.
//!
//! Plain Rust with no system calls: the RIO backend uses it, and it is written to be shared with
//! the io_uring backend (provided buffers, `user_data`).

/// Who owns a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// In the free list: nobody uses it.
    Free,
    /// Taken by the backend: it may read and write the slot's memory.
    Held,
    /// Posted to the kernel (a receive or a send is outstanding): hands off until it completes.
    Posted,
}

/// A transition the ledger refused: a bug in the caller (or a bogus completion), never applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("slot {slot} does not exist (the ledger has {capacity})")]
    Unknown { slot: u32, capacity: u32 },
    #[error("slot {slot} is {actual:?}, expected {expected:?}")]
    WrongState {
        slot: u32,
        expected: SlotState,
        actual: SlotState,
    },
}

/// How many slots are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    pub free: usize,
    pub held: usize,
    pub posted: usize,
}

/// The owner of each of a fixed number of slots, `0..capacity`.
///
/// Transitions: `take` (Free -> Held), `post` (Held -> Posted), `complete` (Posted -> Held),
/// `release` (Held -> Free). Any other transition is refused with a [`LedgerError`] and changes
/// nothing.
#[derive(Clone, Debug)]
pub struct SlotLedger {
    state: Vec<SlotState>,
    /// Free slots, most recently released on top (its memory is the most likely to be cached).
    free: Vec<u32>,
    held: usize,
    posted: usize,
}

impl SlotLedger {
    pub fn new(capacity: u32) -> Self {
        Self {
            state: vec![SlotState::Free; capacity as usize],
            // Reversed so that slots are first handed out in ascending order.
            free: (0..capacity).rev().collect(),
            held: 0,
            posted: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.state.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn counts(&self) -> LedgerCounts {
        LedgerCounts {
            free: self.free.len(),
            held: self.held,
            posted: self.posted,
        }
    }

    /// Every slot is free again: nothing leaked, nothing still with the kernel.
    pub fn balanced(&self) -> bool {
        self.free.len() == self.state.len()
    }

    pub fn state(&self, slot: u32) -> Option<SlotState> {
        self.state.get(slot as usize).copied()
    }

    /// Whether the backend may touch `slot`'s memory now.
    pub fn is_held(&self, slot: u32) -> bool {
        self.state(slot) == Some(SlotState::Held)
    }

    /// Takes a free slot (Free -> Held), or `None` when every slot is in use.
    pub fn take(&mut self) -> Option<u32> {
        let slot = self.free.pop()?;
        debug_assert_eq!(self.state[slot as usize], SlotState::Free);
        self.state[slot as usize] = SlotState::Held;
        self.held += 1;
        Some(slot)
    }

    /// Hands a held slot to the kernel (Held -> Posted).
    pub fn post(&mut self, slot: u32) -> Result<(), LedgerError> {
        self.transition(slot, SlotState::Held, SlotState::Posted)?;
        self.held -= 1;
        self.posted += 1;
        Ok(())
    }

    /// The kernel gave a posted slot back (Posted -> Held).
    pub fn complete(&mut self, slot: u32) -> Result<(), LedgerError> {
        self.transition(slot, SlotState::Posted, SlotState::Held)?;
        self.posted -= 1;
        self.held += 1;
        Ok(())
    }

    /// Returns a held slot to the free list (Held -> Free).
    pub fn release(&mut self, slot: u32) -> Result<(), LedgerError> {
        self.transition(slot, SlotState::Held, SlotState::Free)?;
        self.held -= 1;
        self.free.push(slot);
        Ok(())
    }

    fn transition(
        &mut self,
        slot: u32,
        expected: SlotState,
        next: SlotState,
    ) -> Result<(), LedgerError> {
        let capacity = self.state.len() as u32;
        let state = self
            .state
            .get_mut(slot as usize)
            .ok_or(LedgerError::Unknown { slot, capacity })?;
        if *state != expected {
            return Err(LedgerError::WrongState {
                slot,
                expected,
                actual: *state,
            });
        }
        *state = next;
        Ok(())
    }
}

/// A slot named in a 64-bit completion context: which pool (`class`, e.g. receive or send),
/// which socket or queue (`group`), which slot. Bit 63 is always set, so a zero or small
/// context (a default, an unrelated completion) never decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotToken {
    /// 0..=127.
    pub class: u8,
    pub group: u16,
    pub slot: u32,
}

impl SlotToken {
    const MARK: u64 = 1 << 63;

    pub fn new(class: u8, group: u16, slot: u32) -> Self {
        debug_assert!(class < 0x80, "class takes 7 bits");
        Self {
            class: class & 0x7f,
            group,
            slot,
        }
    }

    pub fn to_u64(self) -> u64 {
        Self::MARK
            | u64::from(self.class & 0x7f) << 48
            | u64::from(self.group) << 32
            | u64::from(self.slot)
    }

    /// The token `v` encodes, or `None` when `v` is not one of ours.
    pub fn from_u64(v: u64) -> Option<Self> {
        if v & Self::MARK == 0 {
            return None;
        }
        Some(Self {
            class: ((v >> 48) & 0x7f) as u8,
            group: (v >> 32) as u16,
            slot: v as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_four_transitions() {
        let mut l = SlotLedger::new(2);
        assert!(l.balanced());
        let a = l.take().unwrap();
        let b = l.take().unwrap();
        assert_eq!((a, b), (0, 1), "handed out in ascending order at first");
        assert_eq!(l.take(), None, "no slot is handed out twice");
        l.post(a).unwrap();
        assert!(!l.is_held(a), "a posted slot belongs to the kernel");
        assert_eq!(
            l.counts(),
            LedgerCounts {
                free: 0,
                held: 1,
                posted: 1
            }
        );
        l.complete(a).unwrap();
        assert!(l.is_held(a));
        l.release(a).unwrap();
        l.release(b).unwrap();
        assert!(l.balanced());
        assert_eq!(
            l.take(),
            Some(b),
            "the most recently released slot comes back first"
        );
    }

    #[test]
    fn refuses_wrong_transitions_and_changes_nothing() {
        let mut l = SlotLedger::new(1);
        let s = l.take().unwrap();
        assert_eq!(
            l.complete(s),
            Err(LedgerError::WrongState {
                slot: s,
                expected: SlotState::Posted,
                actual: SlotState::Held
            })
        );
        l.post(s).unwrap();
        assert!(l.post(s).is_err(), "posting twice");
        assert!(l.release(s).is_err(), "releasing a slot the kernel has");
        l.complete(s).unwrap();
        assert!(l.complete(s).is_err(), "a duplicated completion");
        l.release(s).unwrap();
        assert!(l.release(s).is_err(), "a double release");
        assert_eq!(
            l.post(7),
            Err(LedgerError::Unknown {
                slot: 7,
                capacity: 1
            })
        );
        assert!(l.balanced());
        assert_eq!(
            l.free_count(),
            1,
            "the refused release did not push a second copy"
        );
    }

    /// Random operations against a simple model: the counts always add up, a slot is never in
    /// the free list twice, and refused transitions leave the ledger as it was.
    #[test]
    fn random_operations_keep_the_books() {
        let n = 17u32;
        let mut l = SlotLedger::new(n);
        let mut model = vec![SlotState::Free; n as usize];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let slot = (seed >> 8) as u32 % (n + 1); // sometimes out of range
            match seed % 5 {
                0 => {
                    if let Some(s) = l.take() {
                        assert_eq!(model[s as usize], SlotState::Free, "took a non-free slot");
                        model[s as usize] = SlotState::Held;
                    } else {
                        assert!(model.iter().all(|s| *s != SlotState::Free));
                    }
                }
                op => {
                    let (from, to, r) = match op {
                        1 => (SlotState::Held, SlotState::Posted, l.post(slot)),
                        2 => (SlotState::Posted, SlotState::Held, l.complete(slot)),
                        _ => (SlotState::Held, SlotState::Free, l.release(slot)),
                    };
                    let ok = model.get(slot as usize) == Some(&from);
                    assert_eq!(r.is_ok(), ok, "slot {slot} op {op}: {r:?}");
                    if ok {
                        model[slot as usize] = to;
                    }
                }
            }
            let c = l.counts();
            let count = |st| model.iter().filter(|s| **s == st).count();
            assert_eq!(c.free, count(SlotState::Free));
            assert_eq!(c.held, count(SlotState::Held));
            assert_eq!(c.posted, count(SlotState::Posted));
            for (i, st) in model.iter().enumerate() {
                assert_eq!(l.state(i as u32), Some(*st));
            }
        }
        let mut free = l.free.clone();
        free.sort_unstable();
        free.dedup();
        assert_eq!(
            free.len(),
            l.free_count(),
            "a slot sits twice in the free list"
        );
    }

    #[test]
    fn tokens_round_trip_and_reject_foreign_contexts() {
        for t in [
            SlotToken::new(0, 0, 0),
            SlotToken::new(1, 3, 77),
            SlotToken::new(127, u16::MAX, u32::MAX),
        ] {
            assert_eq!(SlotToken::from_u64(t.to_u64()), Some(t));
        }
        assert_eq!(SlotToken::from_u64(0), None);
        assert_eq!(SlotToken::from_u64(42), None);
    }
}
