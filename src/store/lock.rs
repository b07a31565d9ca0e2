//! OS file lock next to the store.
