//! What the fake server records: every command it received, and every frame it could not
//! decode.

use brook_wire::{Compressor, MsgFlags};
use bson::Document;

/// One kind-1 section (document sequence) of a request, e.g. `documents` of an insert.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSequence {
    /// The sequence's identifier, e.g. `"documents"`, `"updates"`, `"deletes"`.
    pub identifier: String,
    /// Its documents, in order.
    pub documents: Vec<Document>,
}

/// One command the server received, as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCommand {
    /// The command's name: the first key of the body (e.g. `"hello"`, `"getMore"`).
    pub name: String,
    /// The body's `$db` (empty if the client left it out).
    pub db: String,
    /// The kind-0 body, unchanged.
    pub body: Document,
    /// The kind-1 sections, in order.
    pub sequences: Vec<ReceivedSequence>,
    /// The server-side id of the connection it came on (1 for the first connection
    /// accepted, and the `connectionId` of that connection's hello reply).
    pub connection_id: u64,
    /// The request's `requestID`.
    pub request_id: i32,
    /// The request's flag bits (`CHECKSUM_PRESENT` means a checksum came and was verified).
    pub flags: MsgFlags,
    /// The compressor of the OP_COMPRESSED frame it came in, if it was compressed.
    pub compressor: Option<Compressor>,
}

impl ReceivedCommand {
    /// Whether the request carried a (verified) CRC-32C checksum.
    pub fn checksum_present(&self) -> bool {
        self.flags.contains(MsgFlags::CHECKSUM_PRESENT)
    }

    /// Whether the request was flagged `moreToCome` (the client wants no reply).
    pub fn more_to_come(&self) -> bool {
        self.flags.contains(MsgFlags::MORE_TO_COME)
    }

    /// Whether the request allowed an exhaust reply (`exhaustAllowed`).
    pub fn exhaust_allowed(&self) -> bool {
        self.flags.contains(MsgFlags::EXHAUST_ALLOWED)
    }

    /// The documents of the kind-1 section called `identifier`, if the request had one.
    pub fn sequence(&self, identifier: &str) -> Option<&[Document]> {
        self.sequences
            .iter()
            .find(|s| s.identifier == identifier)
            .map(|s| s.documents.as_slice())
    }
}

/// A frame the server could not decode. The server closed the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// The server-side id of the connection.
    pub connection_id: u64,
    /// What was wrong, as the decoder said it.
    pub message: String,
}
