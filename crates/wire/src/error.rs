//! The one error type of this crate.

/// Everything that can go wrong while encoding or decoding a frame.
///
/// Each kind of malformed input has its own variant, so that tests, fuzzers and logs can tell
/// them apart. Offsets and lengths in the variants are in bytes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header declares a negative message length.
    #[error("message length {len} is negative")]
    NegativeMessageLength {
        /// The declared length.
        len: i32,
    },
    /// The header declares a message shorter than the 16-byte header itself.
    #[error("message length {len} is shorter than the 16-byte header")]
    MessageTooShort {
        /// The declared length.
        len: usize,
    },
    /// A message (declared on decode, or produced on encode) is larger than allowed.
    #[error("message length {len} exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// The length of the message.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The header's opcode is neither OP_MSG (2013) nor OP_COMPRESSED (2012).
    #[error("unsupported opcode {0}")]
    UnsupportedOpCode(i32),
    /// The OP_MSG is too short to hold its 4-byte flag bits.
    #[error("OP_MSG too short to hold its flag bits")]
    TruncatedFlags,
    /// A required flag bit (0–15) that this crate does not know is set.
    #[error("unknown required OP_MSG flag bits {0:#010x}")]
    UnknownRequiredFlags(u32),
    /// `checksumPresent` is set but the message has fewer than 4 bytes after its flag bits.
    #[error("checksum flag set but fewer than 4 bytes remain for the checksum")]
    ChecksumMissingBytes,
    /// The CRC-32C at the end of the message does not match its content.
    #[error(
        "checksum mismatch: message carries {expected:#010x}, content hashes to {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The checksum carried by the message.
        expected: u32,
        /// The checksum computed over the message.
        actual: u32,
    },
    /// A section starts with a kind byte other than 0 or 1.
    #[error("unknown OP_MSG section kind {0}")]
    SectionKindUnknown(u8),
    /// The message has no kind-0 (body) section.
    #[error("OP_MSG has no body section")]
    MissingBody,
    /// The message has more than one kind-0 (body) section.
    #[error("OP_MSG has more than one body section")]
    DuplicateBody,
    /// A kind-1 section declares a size smaller than its own size field plus an empty
    /// identifier (5 bytes), or a negative one.
    #[error("document sequence declares invalid size {size}")]
    InvalidSectionSize {
        /// The declared size.
        size: i32,
    },
    /// A kind-1 section's declared size runs past the end of the message's sections.
    #[error("document sequence of {size} bytes overruns the message ({available} bytes left)")]
    SectionOverrun {
        /// The declared size.
        size: usize,
        /// The bytes left in the message from the start of the section's size field.
        available: usize,
    },
    /// A kind-1 section's identifier has no NUL terminator inside the section.
    #[error("document sequence identifier is not NUL-terminated within its section")]
    BadCString,
    /// A kind-1 section's identifier is not valid UTF-8.
    #[error("document sequence identifier is not valid UTF-8")]
    IdentifierNotUtf8,
    /// An identifier to be encoded contains a NUL byte.
    #[error("document sequence identifier {0:?} contains a NUL byte")]
    IdentifierContainsNul(String),
    /// Fewer than 4 bytes remain where a document's length prefix should be.
    #[error("only {available} bytes remain where a document length prefix is expected")]
    TruncatedDocumentLength {
        /// The bytes left in the section.
        available: usize,
    },
    /// A document's length prefix is below the BSON minimum of 5 (or negative).
    #[error("invalid document length {len}")]
    InvalidDocumentLength {
        /// The declared length.
        len: i32,
    },
    /// A document's length prefix runs past the end of its section (or, for a standalone
    /// document, does not match the bytes given).
    #[error("document of {len} bytes overruns its section ({available} bytes left)")]
    DocumentOverrunsSection {
        /// The declared length.
        len: usize,
        /// The bytes available for it.
        available: usize,
    },
    /// A document's last byte is not the NUL terminator.
    #[error("document is not NUL-terminated")]
    MissingDocumentTerminator,
    /// Bytes follow the last section that are too few to be a section and are not a
    /// checksum (the checksum flag is not set).
    #[error("{count} trailing bytes after the last section")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// An OP_COMPRESSED frame is too short for its 9-byte compression header.
    #[error("OP_COMPRESSED frame of {len} bytes is too short for its compression header")]
    CompressedFrameTooShort {
        /// The frame's length.
        len: usize,
    },
    /// An OP_COMPRESSED frame wraps an opcode other than OP_MSG.
    #[error("OP_COMPRESSED wraps opcode {0}, only OP_MSG (2013) is supported")]
    CompressedOpCodeInvalid(i32),
    /// An OP_COMPRESSED frame names a compressor id this crate does not know.
    #[error("unknown compressor id {0}")]
    UnknownCompressor(u8),
    /// An OP_COMPRESSED frame (or an encode request) uses a compressor whose cargo feature
    /// is off.
    #[error("compressor {0} is not enabled in this build")]
    CompressorDisabled(&'static str),
    /// An OP_COMPRESSED frame declares a negative uncompressed size.
    #[error("OP_COMPRESSED declares negative uncompressed size {0}")]
    UncompressedSizeNegative(i32),
    /// An OP_COMPRESSED frame declares an uncompressed message larger than the limit.
    #[error("OP_COMPRESSED declares {size} uncompressed bytes, over the maximum of {max}")]
    UncompressedSizeTooLarge {
        /// The declared size of the message once uncompressed, header included.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The decompressor produced a different number of bytes than declared (at most one
    /// byte more than declared is ever produced: output is capped).
    #[error(
        "OP_COMPRESSED declares {declared} uncompressed bytes but decompression produced {actual}"
    )]
    UncompressedSizeMismatch {
        /// The declared uncompressed size.
        declared: usize,
        /// What the decompressor produced, capped at `declared + 1`.
        actual: usize,
    },
    /// The compressed payload is corrupt.
    #[error("decompression failed: {0}")]
    Decompression(String),
    /// Compressing a message failed.
    #[error("compression failed: {0}")]
    Compression(String),
    /// A BSON document could not be serialised or deserialised.
    #[error("BSON error: {0}")]
    Bson(String),
}
