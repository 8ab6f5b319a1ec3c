//! Bounded cursors: every read and write is checked against the slice end and fails with a
//! [`WireError`] naming the field instead of indexing out of bounds.

use super::error::{WireError, WireResult};

/// A forward-only reader over a borrowed slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn bytes(&mut self, n: usize, ctx: &'static str) -> WireResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated(ctx))?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated(ctx))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, ctx: &'static str) -> WireResult<[u8; N]> {
        let s = self.bytes(N, ctx)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize, ctx: &'static str) -> WireResult<()> {
        self.bytes(n, ctx).map(|_| ())
    }

    pub(crate) fn u8(&mut self, ctx: &'static str) -> WireResult<u8> {
        Ok(self.array::<1>(ctx)?[0])
    }

    pub(crate) fn u16(&mut self, ctx: &'static str) -> WireResult<u16> {
        Ok(u16::from_be_bytes(self.array(ctx)?))
    }

    pub(crate) fn u32(&mut self, ctx: &'static str) -> WireResult<u32> {
        Ok(u32::from_be_bytes(self.array(ctx)?))
    }

    pub(crate) fn u48(&mut self, ctx: &'static str) -> WireResult<u64> {
        let [a, b, c, d, e, f] = self.array(ctx)?;
        Ok(u64::from_be_bytes([0, 0, a, b, c, d, e, f]))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// A forward-only writer into a caller-lent buffer.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn put(&mut self, data: &[u8], ctx: &'static str) -> WireResult<()> {
        let end = self.pos.checked_add(data.len()).ok_or(WireError::BufferTooSmall(ctx))?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(WireError::BufferTooSmall(ctx))?;
        dst.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn zeros(&mut self, n: usize, ctx: &'static str) -> WireResult<()> {
        let end = self.pos.checked_add(n).ok_or(WireError::BufferTooSmall(ctx))?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(WireError::BufferTooSmall(ctx))?;
        dst.fill(0);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u16(&mut self, v: u16, ctx: &'static str) -> WireResult<()> {
        self.put(&v.to_be_bytes(), ctx)
    }

    pub(crate) fn u32(&mut self, v: u32, ctx: &'static str) -> WireResult<()> {
        self.put(&v.to_be_bytes(), ctx)
    }

    /// The bytes written so far.
    pub(crate) fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// Overwrites bytes already written at `at`.
    pub(crate) fn patch(&mut self, at: usize, data: &[u8], ctx: &'static str) -> WireResult<()> {
        let end = at.checked_add(data.len()).ok_or(WireError::InvalidArgument(ctx))?;
        if end > self.pos {
            return Err(WireError::InvalidArgument(ctx));
        }
        self.buf[at..end].copy_from_slice(data);
        Ok(())
    }

    /// Overwrites two bytes already written at `at`.
    pub(crate) fn patch_u16(&mut self, at: usize, v: u16, ctx: &'static str) -> WireResult<()> {
        let dst =
            self.buf.get_mut(at..at.saturating_add(2)).ok_or(WireError::InvalidArgument(ctx))?;
        dst.copy_from_slice(&v.to_be_bytes());
        Ok(())
    }
}

/// Big-endian u16 at `at` of a slice the caller has already bounds-checked; `None` if short.
pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let s = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian u32 at `at`; `None` if short.
pub(crate) fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let s = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
