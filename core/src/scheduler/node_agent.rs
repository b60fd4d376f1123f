//! Node agent (work in progress).
