//! `ReadMostly<T>`: a reader-writer lock for state that every call reads and few calls
//! change (the object table, key material caches).
//!
//! An ordinary reader-writer lock has one counter that every reader increments: with two
//! threads calling at once, that cache line moves between their cores on every call. Here
//! each thread reads through its own shard (crossbeam's `ShardedLock`), so readers on
//! different cores touch no common line; a writer takes every shard.

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use std::sync::PoisonError;

#[derive(Default)]
pub struct ReadMostly<T>(ShardedLock<T>);

impl<T> ReadMostly<T> {
    pub fn new(value: T) -> ReadMostly<T> {
        ReadMostly(ShardedLock::new(value))
    }

    /// A panic while the lock was held poisons nothing here: the library catches panics
    /// at its C boundary, and each writer leaves the value consistent between statements.
    pub fn read(&self) -> ShardedLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> ShardedLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}
