//! `echo`: every byte of a stream is sent back, and the stream finished when the peer's is.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Handler, Output};

/// Received bytes held before we stop reading: the peer's sending is then paced by how fast
/// it reads our echo, through flow control.
const MAX_BUFFERED: usize = 1 << 20;

#[derive(Default)]
pub struct EchoStream {
    queue: VecDeque<Bytes>,
    buffered: usize,
    fin: bool,
}

impl Handler for EchoStream {
    fn wants_input(&self) -> bool {
        self.buffered < MAX_BUFFERED
    }

    fn on_data(&mut self, data: Bytes) {
        self.buffered += data.len();
        // The received `Bytes` goes back out as is: no copy.
        self.queue.push_back(data);
    }

    fn on_fin(&mut self) {
        self.fin = true;
    }

    fn next_output(&mut self) -> Output {
        match self.queue.pop_front() {
            Some(chunk) => {
                self.buffered -= chunk.len();
                Output::Chunk(chunk)
            }
            None if self.fin => Output::Finish,
            None => Output::Pending,
        }
    }
}
