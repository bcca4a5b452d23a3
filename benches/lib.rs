//! Support code for brook's benchmarks.
