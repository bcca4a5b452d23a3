//! The standard message header, opcodes and OP_MSG flag bits.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

use bytes::{BufMut, BytesMut};

/// Reads a little-endian `i32` at `at`, if four bytes are there.
pub(crate) fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    let end = at.checked_add(4)?;
    let four: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    Some(i32::from_le_bytes(four))
}

/// Reads a little-endian `u32` at `at`, if four bytes are there.
pub(crate) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let four: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(four))
}

/// A wire-protocol opcode.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// OP_REPLY (1), legacy; never produced nor accepted by this crate.
    Reply,
    /// OP_QUERY (2004), legacy; never produced nor accepted by this crate.
    Query,
    /// OP_COMPRESSED (2012).
    Compressed,
    /// OP_MSG (2013).
    Msg,
}

impl OpCode {
    /// The opcode's number on the wire.
    pub const fn as_i32(self) -> i32 {
        match self {
            OpCode::Reply => 1,
            OpCode::Query => 2004,
            OpCode::Compressed => 2012,
            OpCode::Msg => 2013,
        }
    }

    /// The opcode with this number, if it is one of the known ones.
    pub const fn from_i32(code: i32) -> Option<OpCode> {
        match code {
            1 => Some(OpCode::Reply),
            2004 => Some(OpCode::Query),
            2012 => Some(OpCode::Compressed),
            2013 => Some(OpCode::Msg),
            _ => None,
        }
    }
}

/// The 16-byte header that starts every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgHeader {
    /// Total length of the message, header included.
    pub message_length: i32,
    /// The sender's identifier for this message.
    pub request_id: i32,
    /// The `request_id` this message answers (0 in requests).
    pub response_to: i32,
    /// The opcode (see [`OpCode`]).
    pub op_code: i32,
}

impl MsgHeader {
    /// The header's size in bytes.
    pub const LEN: usize = 16;

    /// Parses a header from the first 16 bytes of `buf`, if they are there. No validation.
    pub fn parse(buf: &[u8]) -> Option<MsgHeader> {
        Some(MsgHeader {
            message_length: read_i32(buf, 0)?,
            request_id: read_i32(buf, 4)?,
            response_to: read_i32(buf, 8)?,
            op_code: read_i32(buf, 12)?,
        })
    }

    /// The opcode, if it is a known one.
    pub fn op(&self) -> Option<OpCode> {
        OpCode::from_i32(self.op_code)
    }

    /// Appends the 16 header bytes to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.put_i32_le(self.message_length);
        dst.put_i32_le(self.request_id);
        dst.put_i32_le(self.response_to);
        dst.put_i32_le(self.op_code);
    }

    /// The 16 header bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (chunk, v) in out.chunks_exact_mut(4).zip([
            self.message_length,
            self.request_id,
            self.response_to,
            self.op_code,
        ]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Peeks at the header if its 16 bytes are present at the front of `buf` (for readers that
/// want to size their next read). No validation: [`decode`](crate::decode) does that.
pub fn peek_header(buf: &[u8]) -> Option<MsgHeader> {
    MsgHeader::parse(buf)
}

/// The OP_MSG flag bits.
///
/// Bits 0–15 are "required": a receiver must refuse a message with a required bit it does not
/// know. Bits 16–31 are optional and may be ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgFlags(u32);

impl MsgFlags {
    /// Bit 0: the message ends with a CRC-32C checksum.
    pub const CHECKSUM_PRESENT: MsgFlags = MsgFlags(1 << 0);
    /// Bit 1: the sender will send another message without waiting for a reply.
    pub const MORE_TO_COME: MsgFlags = MsgFlags(1 << 1);
    /// Bit 16: the client is prepared to receive several replies (exhaust cursors).
    pub const EXHAUST_ALLOWED: MsgFlags = MsgFlags(1 << 16);

    /// The mask of the required bits (0–15).
    pub const REQUIRED_MASK: u32 = 0x0000_ffff;
    /// The required bits this crate knows.
    pub const KNOWN_REQUIRED: u32 = Self::CHECKSUM_PRESENT.0 | Self::MORE_TO_COME.0;
    /// Every bit this crate gives a meaning to.
    pub const KNOWN: u32 = Self::KNOWN_REQUIRED | Self::EXHAUST_ALLOWED.0;

    /// No flag set.
    pub const fn empty() -> MsgFlags {
        MsgFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags with exactly these bits, known or not.
    pub const fn from_bits_retain(bits: u32) -> MsgFlags {
        MsgFlags(bits)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: MsgFlags) {
        self.0 |= other.0;
    }

    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: MsgFlags) {
        self.0 &= !other.0;
    }

    /// Sets or clears the bits of `other`.
    pub fn set(&mut self, other: MsgFlags, value: bool) {
        if value {
            self.insert(other);
        } else {
            self.remove(other);
        }
    }

    /// The required bits (0–15) that are set but unknown to this crate.
    pub const fn unknown_required(self) -> u32 {
        self.0 & Self::REQUIRED_MASK & !Self::KNOWN_REQUIRED
    }
}

impl BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for MsgFlags {
    fn bitor_assign(&mut self, rhs: MsgFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for MsgFlags {
    type Output = MsgFlags;
    fn bitand(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for MsgFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        for (flag, name) in [
            (MsgFlags::CHECKSUM_PRESENT, "CHECKSUM_PRESENT"),
            (MsgFlags::MORE_TO_COME, "MORE_TO_COME"),
            (MsgFlags::EXHAUST_ALLOWED, "EXHAUST_ALLOWED"),
        ] {
            if self.contains(flag) {
                names.push(name);
            }
        }
        let other = self.0 & !Self::KNOWN;
        write!(f, "MsgFlags({}", names.join(" | "))?;
        if other != 0 {
            if !names.is_empty() {
                f.write_str(" | ")?;
            }
            write!(f, "{other:#x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = MsgHeader {
            message_length: 42,
            request_id: 7,
            response_to: -3,
            op_code: 2013,
        };
        let bytes = h.to_bytes();
        assert_eq!(peek_header(&bytes), Some(h));
        let mut dst = BytesMut::new();
        h.write_to(&mut dst);
        assert_eq!(&dst[..], &bytes[..]);
        assert_eq!(h.op(), Some(OpCode::Msg));
        assert_eq!(peek_header(&bytes[..15]), None);
    }

    #[test]
    fn opcode_numbers() {
        for op in [
            OpCode::Reply,
            OpCode::Query,
            OpCode::Compressed,
            OpCode::Msg,
        ] {
            assert_eq!(OpCode::from_i32(op.as_i32()), Some(op));
        }
        assert_eq!(OpCode::from_i32(2010), None);
    }

    #[test]
    fn flag_operations() {
        let mut f = MsgFlags::empty();
        assert!(f.is_empty());
        f.insert(MsgFlags::MORE_TO_COME);
        f |= MsgFlags::EXHAUST_ALLOWED;
        assert!(f.contains(MsgFlags::MORE_TO_COME | MsgFlags::EXHAUST_ALLOWED));
        assert_eq!(f.bits(), 0x0001_0002);
        f.remove(MsgFlags::MORE_TO_COME);
        assert!(!f.contains(MsgFlags::MORE_TO_COME));
        f.set(MsgFlags::CHECKSUM_PRESENT, true);
        assert_eq!((f & MsgFlags::CHECKSUM_PRESENT), MsgFlags::CHECKSUM_PRESENT);
        assert_eq!(
            MsgFlags::from_bits_retain(0x0000_0004).unknown_required(),
            4
        );
        assert_eq!(
            MsgFlags::from_bits_retain(0x0004_0003).unknown_required(),
            0
        );
        assert_eq!(
            format!("{:?}", MsgFlags::from_bits_retain(0x0101_0001)),
            "MsgFlags(CHECKSUM_PRESENT | EXHAUST_ALLOWED | 0x1000000)"
        );
    }
}
