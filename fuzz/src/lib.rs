//! What the fuzz targets share: an input read as a shape byte and a payload, and an
//! in-memory client connection that hands the payload over in chunks the shape chooses,
//! then closes or stalls. Connections are read on a current-thread runtime whose clock is
//! paused, so a stalled client's timeout is reached at once rather than in real time.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, ReadBuf};

/// Chunk sizes a client's bytes arrive in, cycled; chosen by a shape's two low bits.
const CHUNKINGS: [&[usize]; 4] = [&[usize::MAX], &[1], &[1, 2, 3, 5, 8, 13], &[7, 64, 2, 512]];

/// A target's input: its first byte shapes how the rest is used.
#[derive(Clone, Copy, Debug)]
pub struct Shaped<'a> {
    /// Bits 0-1: chunking; bit 2: the client stalls (rather than closes) after its bytes;
    /// bits 3-4: a target's own choice (e.g. a size limit); bits 5-7: free for targets.
    pub shape: u8,
    /// What the client sends.
    pub payload: &'a [u8],
}

impl<'a> Shaped<'a> {
    /// Splits an input; `None` for an empty one.
    pub fn new(data: &'a [u8]) -> Option<Shaped<'a>> {
        let (shape, payload) = data.split_first()?;
        Some(Shaped {
            shape: *shape,
            payload,
        })
    }

    /// The two bits a target chooses with (0..=3).
    pub fn choice(&self) -> usize {
        usize::from((self.shape >> 3) & 3)
    }

    /// A client that sends the payload as the shape says.
    pub fn client(&self) -> Client<'a> {
        Client {
            rest: self.payload,
            chunks: CHUNKINGS[usize::from(self.shape & 3)],
            next: 0,
            stalls: self.shape & 4 != 0,
        }
    }
}

/// A client connection over a byte slice: each read gets at most the next chunk; after
/// the last byte, reads see the end of the stream or wait forever.
#[derive(Debug)]
pub struct Client<'a> {
    rest: &'a [u8],
    chunks: &'static [usize],
    next: usize,
    stalls: bool,
}

impl Client<'_> {
    /// Whether the client stalls after its bytes instead of closing.
    pub fn stalls(&self) -> bool {
        self.stalls
    }
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            // Nothing wakes a stalled read: the reader's timeout (paused clock) ends it.
            return if self.stalls {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        }
        let chunk = self.chunks[self.next % self.chunks.len()];
        self.next += 1;
        let n = chunk.min(self.rest.len()).min(buf.remaining());
        let (now, later) = self.rest.split_at(n);
        buf.put_slice(now);
        self.rest = later;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
}

/// Runs `f` to completion on the paused-clock runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// What a reader kept of what the client sent: never more than `limit`, and exactly the
/// first bytes sent.
pub fn assert_kept_prefix(kept: &[u8], sent: &[u8], limit: usize) {
    assert!(
        kept.len() <= limit,
        "read {} bytes past the limit {limit}",
        kept.len()
    );
    assert_eq!(
        kept,
        &sent[..kept.len()],
        "kept bytes are not what was sent"
    );
}
