use crate::errors::*;
use indexmap::IndexSet;
use snafu::OptionExt;
use std::collections::hash_map::{Drain, Entry, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The channel ids of a connection not in use: shared by the I/O thread, which frees them, and
/// the connection's handle, which takes one for a new channel without asking the thread
/// (`Connection::allocate_channel_now`).
pub(crate) struct ChannelIds {
    state: Mutex<IdState>,
}

struct IdState {
    next_channel_id: u16,
    freed_channel_ids: IndexSet<u16>,
    channel_max: u16,
}

impl ChannelIds {
    fn new() -> ChannelIds {
        ChannelIds {
            state: Mutex::new(IdState {
                next_channel_id: 1,
                freed_channel_ids: IndexSet::new(),
                channel_max: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IdState> {
        // Nothing panics while holding it; a poisoned lock still holds good data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An id never handed out yet, or else one freed; none when all are in use. Ids a caller
    /// chose itself (`insert(Some(id))`) are not known here, so `is_used` skips them.
    pub(crate) fn take(&self, is_used: impl Fn(u16) -> bool) -> Option<u16> {
        let mut state = self.lock();
        while state.next_channel_id <= state.channel_max {
            let channel_id = state.next_channel_id;
            state.next_channel_id += 1;
            if !is_used(channel_id) {
                return Some(channel_id);
            }
        }
        state.freed_channel_ids.pop()
    }

    fn free(&self, channel_id: u16) {
        self.lock().freed_channel_ids.insert(channel_id);
    }
}

pub(crate) struct ChannelSlots<T> {
    slots: HashMap<u16, T>,
    ids: Arc<ChannelIds>,
}

impl<T> ChannelSlots<T> {
    pub(crate) fn new() -> ChannelSlots<T> {
        ChannelSlots {
            slots: HashMap::new(),
            ids: Arc::new(ChannelIds::new()),
        }
    }

    /// The ids not in use, for taking one outside the I/O thread.
    pub(crate) fn ids(&self) -> Arc<ChannelIds> {
        Arc::clone(&self.ids)
    }

    pub(crate) fn drain(&mut self) -> Drain<u16, T> {
        for (id, _) in self.slots.iter() {
            self.ids.free(*id);
        }
        self.slots.drain()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u16, &T)> {
        self.slots.iter()
    }

    pub(crate) fn set_channel_max(&mut self, channel_max: u16) {
        let mut ids = self.ids.lock();
        assert!(
            self.slots.is_empty() && ids.freed_channel_ids.is_empty(),
            "channel_max should not be set after channels have been opened"
        );
        ids.channel_max = channel_max;
    }

    pub(crate) fn get(&self, channel_id: u16) -> Option<&T> {
        self.slots.get(&channel_id)
    }

    pub(crate) fn get_mut(&mut self, channel_id: u16) -> Option<&mut T> {
        self.slots.get_mut(&channel_id)
    }

    pub(crate) fn insert<F, U>(&mut self, channel_id: Option<u16>, make_entry: F) -> Result<U>
    where
        F: FnOnce(u16) -> Result<(T, U)>,
    {
        let channel_id = match channel_id {
            Some(id) => id,
            None => return self.insert_unused_channel_id(make_entry),
        };
        if channel_id > self.ids.lock().channel_max {
            return UnavailableChannelIdSnafu { channel_id }.fail();
        }
        match self.slots.entry(channel_id) {
            Entry::Occupied(_) => UnavailableChannelIdSnafu { channel_id }.fail(),
            Entry::Vacant(entry) => {
                let (t, u) = make_entry(channel_id)?;
                entry.insert(t);
                Ok(u)
            }
        }
    }

    /// Puts `entry` at `channel_id`, an id taken from `ids()` outside the I/O thread.
    pub(crate) fn insert_taken(&mut self, channel_id: u16, entry: T) -> Result<()> {
        match self.slots.entry(channel_id) {
            Entry::Occupied(_) => UnavailableChannelIdSnafu { channel_id }.fail(),
            Entry::Vacant(vacant) => {
                vacant.insert(entry);
                Ok(())
            }
        }
    }

    pub(crate) fn remove(&mut self, channel_id: u16) -> Option<T> {
        let entry = self.slots.remove(&channel_id)?;
        self.ids.free(channel_id);
        Some(entry)
    }

    fn insert_unused_channel_id<F, U>(&mut self, make_entry: F) -> Result<U>
    where
        F: FnOnce(u16) -> Result<(T, U)>,
    {
        let slots = &self.slots;
        let channel_id = self
            .ids
            .take(|id| slots.contains_key(&id))
            .context(ExhaustedChannelIdsSnafu)?;
        match self.slots.entry(channel_id) {
            Entry::Occupied(_) => unreachable!("free channel id cannot be occupied"),
            Entry::Vacant(entry) => {
                let (t, u) = make_entry(channel_id)?;
                entry.insert(t);
                Ok(u)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T>(x: T) -> Result<(T, ())> {
        Ok((x, ()))
    }

    fn with_channel_max(channel_max: u16) -> ChannelSlots<u16> {
        let mut cs = ChannelSlots::new();
        cs.set_channel_max(channel_max);
        cs
    }

    #[test]
    #[should_panic]
    fn set_channel_max_after_insert_panics() {
        let mut cs = with_channel_max(4);
        if cs.insert(Some(1), id).is_err() {
            return;
        }
        cs.set_channel_max(4);
    }

    #[test]
    #[should_panic]
    fn set_channel_max_after_insert_and_remove_panics() {
        let mut cs = with_channel_max(4);
        if cs.insert(Some(1), id).is_err() {
            return;
        }
        if cs.remove(1).is_none() {
            return;
        }
        cs.set_channel_max(4);
    }

    #[test]
    fn insert_channel_above_max_fails() {
        let mut cs = with_channel_max(4);
        let res = cs.insert(Some(5), id);
        match res.unwrap_err() {
            Error::UnavailableChannelId { channel_id } if channel_id == 5 => (),
            err => panic!("unexpected error {}", err),
        }
    }

    #[test]
    fn insert_taken_id_fails() {
        let mut cs = with_channel_max(4);
        cs.insert(Some(1), id).unwrap();
        let res = cs.insert(Some(1), id);
        match res.unwrap_err() {
            Error::UnavailableChannelId { channel_id } if channel_id == 1 => (),
            err => panic!("unexpected error {}", err),
        }
    }

    #[test]
    fn insert_finds_never_used_ids() {
        let mut cs = with_channel_max(4);
        cs.insert(Some(1), id).unwrap();
        cs.insert(Some(2), id).unwrap();
        assert_eq!(cs.ids.lock().next_channel_id, 1); // still doesn't know about the manually-chosen ids..

        // should pick 3 (next available)
        cs.insert(None, id).unwrap();
        assert!(cs.get(3).is_some());
        assert_eq!(cs.ids.lock().next_channel_id, 4);
    }

    #[test]
    fn insert_finds_freed_ids() {
        let mut cs = with_channel_max(4);
        for i in 1..=4 {
            cs.insert(Some(i), id).unwrap();
        }
        assert!(cs.remove(2).is_some());
        assert!(cs.get(2).is_none());
        cs.insert(None, id).unwrap();
        assert!(cs.get(2).is_some());
    }

    #[test]
    fn insert_fails_if_all_available_ids_taken() {
        let mut cs = with_channel_max(4);
        for i in 1..=4 {
            cs.insert(Some(i), id).unwrap();
        }
        match cs.insert(None, id).unwrap_err() {
            Error::ExhaustedChannelIds => (),
            err => panic!("unexpected error {}", err),
        }
    }

    #[test]
    fn ids_taken_outside_are_never_given_twice_and_come_back_when_freed() {
        let mut cs = with_channel_max(3);
        let ids = cs.ids();
        let taken = ids.take(|_| false).unwrap();
        cs.insert_taken(taken, 10).unwrap();
        // The thread's own allocation skips it, and so does the next one taken outside.
        cs.insert(None, id).unwrap();
        let other = ids.take(|_| false).unwrap();
        assert!(other != taken && cs.get(other).is_none());
        cs.insert_taken(other, 30).unwrap();
        assert!(ids.take(|_| false).is_none(), "all three are in use");
        assert!(cs.remove(taken).is_some());
        assert_eq!(ids.take(|_| false), Some(taken));
    }

    #[test]
    fn an_id_taken_outside_but_in_use_is_refused_not_replaced() {
        let mut cs = with_channel_max(4);
        cs.insert(Some(1), id).unwrap();
        // Ids chosen by the caller are not known to the free ids.
        let taken = cs.ids().take(|_| false).unwrap();
        assert_eq!(taken, 1);
        match cs.insert_taken(taken, 99).unwrap_err() {
            Error::UnavailableChannelId { channel_id } if channel_id == 1 => (),
            err => panic!("unexpected error {}", err),
        }
        assert_eq!(cs.get(1), Some(&1));
    }
}
