//! Either backend, chosen by configuration at run time.

use super::kinesis::KinesisBackend;
use super::local::LocalLog;
use super::{
    GetRecordsOutput, PlacedPut, PutEntry, PutOutcome, ShardIterator, StartPosition, StreamBackend,
    StreamDescription, StreamError,
};

/// The local log or Kinesis, behind one type.
#[derive(Debug, Clone)]
pub enum AnyBackend {
    Local(LocalLog),
    Kinesis(KinesisBackend),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBackend::Local($b) => $call.await,
            AnyBackend::Kinesis($b) => $call.await,
        }
    };
}

impl StreamBackend for AnyBackend {
    fn keeps_order_within_put(&self) -> bool {
        match self {
            AnyBackend::Local(b) => b.keeps_order_within_put(),
            AnyBackend::Kinesis(b) => b.keeps_order_within_put(),
        }
    }

    fn place_put(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Option<PlacedPut>, StreamError> {
        match self {
            AnyBackend::Local(b) => b.place_put(stream, entries),
            AnyBackend::Kinesis(b) => b.place_put(stream, entries),
        }
    }

    async fn create_stream(&self, name: &str, shards: u32) -> Result<(), StreamError> {
        delegate!(self, b => b.create_stream(name, shards))
    }

    async fn max_open_shards(&self, stream: &str) -> Result<Option<u32>, StreamError> {
        delegate!(self, b => b.max_open_shards(stream))
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        delegate!(self, b => b.delete_stream(name))
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        delegate!(self, b => b.list_streams())
    }

    async fn describe(&self, name: &str) -> Result<StreamDescription, StreamError> {
        delegate!(self, b => b.describe(name))
    }

    async fn put_records(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Vec<PutOutcome>, StreamError> {
        delegate!(self, b => b.put_records(stream, entries))
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &StartPosition,
    ) -> Result<ShardIterator, StreamError> {
        delegate!(self, b => b.shard_iterator(stream, shard, from))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, StreamError> {
        delegate!(self, b => b.get_records(iterator, limit))
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard: &str,
        new_starting_hash_key: u128,
    ) -> Result<(), StreamError> {
        delegate!(self, b => b.split_shard(stream, shard, new_starting_hash_key))
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard: &str,
        adjacent: &str,
    ) -> Result<(), StreamError> {
        delegate!(self, b => b.merge_shards(stream, shard, adjacent))
    }
}
