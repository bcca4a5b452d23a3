//! Reply frames, well-formed and deliberately broken.
//!
//! The server writes its OP_MSG replies with this small encoder of its own rather than with
//! brook-wire's, so that a bug in brook-wire's encoder cannot hide the same bug in its
//! decoder, and so that each fault can corrupt exactly one field of an otherwise valid frame.

use crate::action::Fault;

/// OP_MSG's opcode.
pub(crate) const OP_MSG: i32 = 2013;
/// Header (16) + flags (4) + section kind (1).
const BODY_OFFSET: usize = 21;
const FLAG_CHECKSUM: u32 = 1;
/// `moreToCome`.
pub(crate) const FLAG_MORE_TO_COME: u32 = 1 << 1;

/// Encode an OP_MSG reply with one kind-0 section holding `body` (a serialised document).
/// With `checksum` the CRC-32C is appended and the flag set.
pub(crate) fn encode_msg(
    request_id: i32,
    response_to: i32,
    flags: u32,
    body: &[u8],
    checksum: bool,
) -> Vec<u8> {
    let flags = if checksum {
        flags | FLAG_CHECKSUM
    } else {
        flags & !FLAG_CHECKSUM
    };
    let total = BODY_OFFSET + body.len() + if checksum { 4 } else { 0 };
    let mut out = Vec::with_capacity(total);
    // A reply larger than i32::MAX cannot be framed; saturating keeps the declared length
    // wrong rather than panicking (the client then refuses the frame).
    let declared = i32::try_from(total).unwrap_or(i32::MAX);
    out.extend_from_slice(&declared.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&OP_MSG.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
    if checksum {
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

fn put_i32(frame: &mut [u8], at: usize, value: i32) {
    if let Some(slot) = frame.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

/// What to send for a fault that corrupts a frame, and what to do after.
pub(crate) enum FaultPlan {
    /// Send these bytes, then keep serving the connection.
    SendAndContinue(Vec<u8>),
    /// Send these bytes, wait, then close.
    SendWaitClose(Vec<u8>, std::time::Duration),
    /// Close without sending anything.
    Close,
    /// Never answer.
    Hang,
}

/// Turn a fault into bytes, starting from the valid reply `body` to the request
/// `request_id`; `reply_id` is the id the reply frame gets.
pub(crate) fn plan_fault(fault: &Fault, request_id: i32, reply_id: i32, body: &[u8]) -> FaultPlan {
    let valid =
        |flags: u32, checksum: bool| encode_msg(reply_id, request_id, flags, body, checksum);
    match fault {
        Fault::CloseWithoutReply => FaultPlan::Close,
        Fault::Hang => FaultPlan::Hang,
        Fault::CloseMidReply => {
            let mut frame = valid(0, false);
            let keep = (frame.len() / 2).max(16).min(frame.len().saturating_sub(1));
            frame.truncate(keep);
            FaultPlan::SendWaitClose(frame, std::time::Duration::ZERO)
        }
        Fault::PartialThenStall { bytes, stall } => {
            let mut frame = valid(0, false);
            let keep = (*bytes).min(frame.len().saturating_sub(1));
            frame.truncate(keep);
            FaultPlan::SendWaitClose(frame, *stall)
        }
        Fault::LengthOverLimit { declared } | Fault::LengthBelowMinimum { declared } => {
            let mut frame = valid(0, false);
            put_i32(&mut frame, 0, *declared);
            FaultPlan::SendAndContinue(frame)
        }
        Fault::BadBson => {
            let mut frame = valid(0, false);
            // The body's own length prefix claims 64 bytes more than the section holds.
            let claimed = i32::try_from(body.len().saturating_add(64)).unwrap_or(i32::MAX);
            put_i32(&mut frame, BODY_OFFSET, claimed);
            FaultPlan::SendAndContinue(frame)
        }
        Fault::UnknownSectionKind(kind) => {
            let mut frame = valid(0, false);
            if let Some(slot) = frame.get_mut(BODY_OFFSET - 1) {
                *slot = *kind;
            }
            FaultPlan::SendAndContinue(frame)
        }
        Fault::BadChecksum => {
            let mut frame = valid(0, true);
            if let Some(last) = frame.last_mut() {
                *last ^= 0xff;
            }
            FaultPlan::SendAndContinue(frame)
        }
        Fault::WrongResponseTo => FaultPlan::SendAndContinue(encode_msg(
            reply_id,
            request_id.wrapping_add(1000),
            0,
            body,
            false,
        )),
        Fault::UnknownRequiredFlag(bits) => FaultPlan::SendAndContinue(valid(*bits, false)),
    }
}

/// OP_QUERY's opcode (legacy; real servers answer it only for the handshake).
pub(crate) const OP_QUERY: i32 = 2004;
/// OP_REPLY's opcode.
const OP_REPLY: i32 = 1;

/// A decoded OP_QUERY: the request id, the full collection name (`admin.$cmd` for a
/// command) and the query document.
pub(crate) struct OpQuery {
    pub(crate) request_id: i32,
    pub(crate) collection: String,
    pub(crate) query: bson::Document,
}

/// Decodes a whole OP_QUERY frame (header included): `flags`, `fullCollectionName`,
/// `numberToSkip`, `numberToReturn`, the query, an optional field selector.
pub(crate) fn decode_op_query(frame: &[u8]) -> Result<OpQuery, String> {
    let i32_at = |at: usize| {
        frame
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_le_bytes)
            .ok_or_else(|| "OP_QUERY: truncated".to_owned())
    };
    let request_id = i32_at(4)?;
    let rest = frame.get(20..).ok_or("OP_QUERY: truncated")?;
    let name_len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or("OP_QUERY: unterminated collection name")?;
    let collection = std::str::from_utf8(rest.get(..name_len).unwrap_or_default())
        .map_err(|_| "OP_QUERY: the collection name is not UTF-8".to_owned())?
        .to_owned();
    // flags (4) + name + NUL + numberToSkip (4) + numberToReturn (4)
    let query_at = 20 + name_len + 1 + 8;
    let query_bytes = frame.get(query_at..).ok_or("OP_QUERY: truncated")?;
    let query = bson::Document::from_reader(query_bytes)
        .map_err(|e| format!("OP_QUERY: the query is not a document: {e}"))?;
    Ok(OpQuery {
        request_id,
        collection,
        query,
    })
}

/// Encodes an OP_REPLY carrying one document: responseFlags 0, cursorID 0, startingFrom
/// 0, numberReturned 1.
pub(crate) fn encode_op_reply(request_id: i32, response_to: i32, body: &[u8]) -> Vec<u8> {
    let total = 16 + 4 + 8 + 4 + 4 + body.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&i32::try_from(total).unwrap_or(i32::MAX).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&OP_REPLY.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn body() -> Vec<u8> {
        doc! { "ok": 1.0 }.to_vec().unwrap()
    }

    #[test]
    fn valid_frame_layout() {
        let b = body();
        let f = encode_msg(7, 3, 0, &b, false);
        assert_eq!(f.len(), 21 + b.len());
        assert_eq!(&f[0..4], &(f.len() as i32).to_le_bytes());
        assert_eq!(&f[4..8], &7i32.to_le_bytes());
        assert_eq!(&f[8..12], &3i32.to_le_bytes());
        assert_eq!(&f[12..16], &2013i32.to_le_bytes());
        assert_eq!(&f[16..20], &0u32.to_le_bytes());
        assert_eq!(f[20], 0);
        assert_eq!(&f[21..], &b[..]);
    }

    #[test]
    fn checksum_frame_verifies() {
        let b = body();
        let f = encode_msg(1, 2, FLAG_MORE_TO_COME, &b, true);
        let (msg, crc) = f.split_at(f.len() - 4);
        assert_eq!(crc, &crc32c::crc32c(msg).to_le_bytes());
        assert_eq!(&f[16..20], &(FLAG_MORE_TO_COME | 1).to_le_bytes());
    }

    #[test]
    fn faults_corrupt_one_field() {
        let b = body();
        let FaultPlan::SendAndContinue(f) = plan_fault(&Fault::BadBson, 5, 9, &b) else {
            panic!("wrong plan");
        };
        assert_eq!(&f[21..25], &((b.len() + 64) as i32).to_le_bytes());
        let FaultPlan::SendAndContinue(f) = plan_fault(&Fault::UnknownSectionKind(7), 5, 9, &b)
        else {
            panic!("wrong plan");
        };
        assert_eq!(f[20], 7);
        let FaultPlan::SendAndContinue(f) = plan_fault(&Fault::WrongResponseTo, 5, 9, &b) else {
            panic!("wrong plan");
        };
        assert_eq!(&f[8..12], &1005i32.to_le_bytes());
        let FaultPlan::SendAndContinue(f) =
            plan_fault(&Fault::LengthBelowMinimum { declared: 8 }, 5, 9, &b)
        else {
            panic!("wrong plan");
        };
        assert_eq!(&f[0..4], &8i32.to_le_bytes());
        let FaultPlan::SendWaitClose(f, _) = plan_fault(&Fault::CloseMidReply, 5, 9, &b) else {
            panic!("wrong plan");
        };
        assert!(f.len() >= 16 && f.len() < 21 + b.len());
        let FaultPlan::SendAndContinue(f) = plan_fault(&Fault::BadChecksum, 5, 9, &b) else {
            panic!("wrong plan");
        };
        let (msg, crc) = f.split_at(f.len() - 4);
        assert_ne!(crc, &crc32c::crc32c(msg).to_le_bytes());
    }
}
