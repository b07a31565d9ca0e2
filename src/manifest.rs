//! Not yet implemented; see the issues.
