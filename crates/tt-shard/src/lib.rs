//! tt-shard
