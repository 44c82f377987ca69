//! Zero-copy views of a batch and its lines.

/// One line of a batch, borrowed from the batch's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub(crate) index: u32,
    pub(crate) bytes: &'a [u8],
    pub(crate) listener: u64,
    pub(crate) counter: u64,
    pub(crate) received_ms: i64,
    pub(crate) key: &'a [u8],
}

impl<'a> Line<'a> {
    /// The event, byte for byte as the producer sent it (no newline; not
    /// necessarily UTF-8).
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The line as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes).ok()
    }

    /// Position of the line in its batch.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The event id, `(listener id, listener counter)`: unique across
    /// listeners and stable through replays.
    #[inline]
    pub fn event_id(&self) -> (u64, u64) {
        (self.listener, self.counter)
    }

    /// Receive time, milliseconds since the Unix epoch.
    #[inline]
    pub fn received_ms(&self) -> i64 {
        self.received_ms
    }

    /// The partition key (UTF-8 as the intake wrote it; given as bytes).
    #[inline]
    pub fn key(&self) -> &'a [u8] {
        self.key
    }
}

/// Where a batch comes from (see [`Filter::begin_batch`](crate::Filter::begin_batch)).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The stream the batch was read from.
    pub stream: &'a str,
    /// The shard (bucket) within the stream.
    pub shard: &'a str,
    /// Sequence number of the first record in the batch.
    pub first_sequence: &'a str,
    /// Sequence number of the last record in the batch.
    pub last_sequence: &'a str,
}
