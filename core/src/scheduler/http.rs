//! HTTP routes (work in progress).
