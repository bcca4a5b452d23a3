//! Reading what a resume token says: its cluster time, and what else can be read.
//!
//! A token is `{_data: "<hex>", _typeBits?: BinData}`. The hex string is a KeyString (the
//! server's order-preserving index-key encoding, version V1, ascending) of a list of
//! unnamed values, in this order (`ResumeToken::ResumeToken(const ResumeTokenData&)` in
//! the server's `src/mongo/db/pipeline/resume_token.cpp`):
//!
//! 1. `clusterTime`: a Timestamp (type byte `0x82`, then 8 bytes big-endian: seconds, then
//!    increment);
//! 2. `version`: an int (0, 1 or 2);
//! 3. `tokenType` (version ≥ 1): an int, 0 for a high-water mark, 128 for an event;
//! 4. `txnOpIndex`: an integer;
//! 5. `fromInvalidate` (version ≥ 1): a bool;
//! 6. the collection `uuid` (BinData subtype 4), or null (version ≥ 2), or nothing;
//! 7. `eventIdentifier`, an object: the document key (version ≤ 1), or
//!    `{operationType, documentKey | operationDescription}` (version 2);
//! 8. `fragmentNum` (version 2, `$changeStreamSplitLargeEvent` fragments only): an integer,
//!    0 for the first fragment;
//!
//! then the end byte `0x04`. Numbers are encoded by magnitude (the `_typeBits` field, which
//! records int vs long vs double, is not needed to read a non-negative integer and is
//! ignored here).
//!
//! The format is the server's internal business and may change: everything here is best
//! effort, and "could not read it" is `None`, never an error.

use bson::{RawDocument, Timestamp};

/// What kind of position a resume token marks.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// A high-water mark: a `postBatchResumeToken` for a point between events (token type 0).
    HighWaterMark,
    /// The `_id` of an event (token type 128).
    Event,
}

/// What a resume token's `_data` says, as far as it can be read.
///
/// Only `cluster_time` is always there; every other field is `None` when the token does
/// not carry it or when it could not be read (an unknown version, an unexpected byte).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The cluster time of the event, or of the high-water mark.
    pub cluster_time: Timestamp,
    /// The token format version (0, 1 or 2 as of MongoDB 8).
    pub version: Option<i32>,
    /// A high-water mark or an event (absent from version-0 tokens).
    pub token_type: Option<TokenType>,
    /// The position of the event within its transaction (0 outside transactions).
    pub txn_op_index: Option<u64>,
    /// Whether the token is the one of an `invalidate` event (absent from version-0 tokens).
    pub from_invalidate: Option<bool>,
    /// The UUID of the collection the event is about, when the token carries one.
    pub collection_uuid: Option<bson::Uuid>,
    /// Whether the token identifies its event by a document key (`Some(false)`: no event
    /// identifier at all, or an `operationDescription` instead).
    pub has_document_key: Option<bool>,
    /// The event's `operationType`, carried by version-2 event tokens.
    pub event_type: Option<String>,
    /// For a fragment of a split event (`$changeStreamSplitLargeEvent`): its index in the
    /// token, counted from 0 (the event's `splitEvent.fragment` minus one).
    pub fragment_num: Option<u64>,
}

impl TokenInfo {
    fn new(cluster_time: Timestamp) -> TokenInfo {
        TokenInfo {
            cluster_time,
            version: None,
            token_type: None,
            txn_op_index: None,
            from_invalidate: None,
            collection_uuid: None,
            has_document_key: None,
            event_type: None,
            fragment_num: None,
        }
    }
}

/// Reads a resume token document (`{_data: "<hex>", ...}`).
///
/// `None` when the token is not of the hex-string kind (e.g. MongoDB 3.6's BinData tokens)
/// or its cluster time cannot be read. Never panics, whatever the input.
///
/// ```
/// use brook_changestream::{TokenType, decode_resume_token};
/// use bson::{Timestamp, rawdoc};
///
/// // A postBatchResumeToken (a high-water mark) of a MongoDB 5.0 replica set.
/// let token = rawdoc! { "_data": "82612F653E000000022B0229296E04" };
/// let info = decode_resume_token(&token).unwrap();
/// assert_eq!(info.cluster_time, Timestamp { time: 1630496062, increment: 2 });
/// assert_eq!(info.token_type, Some(TokenType::HighWaterMark));
/// ```
pub fn decode_resume_token(token: &RawDocument) -> Option<TokenInfo> {
    match token.get_str("_data") {
        Ok(data) => decode_resume_token_hex(data),
        Err(_) => None,
    }
}

/// Reads the `_data` hex string of a resume token (either case).
///
/// `None` when the string is not hex (odd length, another character) or does not start
/// with a cluster time. Never panics, and allocates nothing beyond a copy of the
/// `operationType` it returns.
pub fn decode_resume_token_hex(data: &str) -> Option<TokenInfo> {
    let mut r = Reader::new(data)?;
    if r.byte()? != TIMESTAMP {
        return None;
    }
    let time = r.u32()?;
    let increment = r.u32()?;
    let mut info = TokenInfo::new(Timestamp { time, increment });
    read_rest(&mut r, &mut info);
    Some(info)
}

// KeyString type bytes (the server's `key_string.cpp`, enum CType).
const NULL: u8 = 20;
const NUMERIC_ZERO: u8 = 41;
const NUMERIC_POS_1_BYTE: u8 = 43;
const NUMERIC_POS_8_BYTE: u8 = 50;
const NUMERIC_NEG_8_BYTE: u8 = 32;
const NUMERIC_NEG_1_BYTE: u8 = 39;
const STRING: u8 = 60;
const OBJECT: u8 = 70;
const ARRAY: u8 = 80;
const BIN_DATA: u8 = 90;
const OID: u8 = 100;
const BOOL_FALSE: u8 = 110;
const BOOL_TRUE: u8 = 111;
const DATE: u8 = 120;
const TIMESTAMP: u8 = 130;
const REGEX: u8 = 140;
const DB_REF: u8 = 150;
const CODE: u8 = 160;
const CODE_WITH_SCOPE: u8 = 170;
const MIN_KEY: u8 = 10;
const UNDEFINED: u8 = 15;
const MAX_KEY: u8 = 240;
const NUMERIC_NAN: u8 = 30;
/// The byte after the last value of a key (the inclusive discriminator).
const END: u8 = 4;
/// Deeper nesting than the server accepts in a document is garbage, not a token.
const MAX_DEPTH: usize = 200;

const TOKEN_HIGH_WATER_MARK: u64 = 0;
const TOKEN_EVENT: u64 = 128;

/// The fields after the cluster time. Stops at the first thing it cannot read, leaving
/// the remaining fields `None`.
fn read_rest(r: &mut Reader<'_>, info: &mut TokenInfo) -> Option<()> {
    let version = i32::try_from(r.uint()?).ok()?;
    info.version = Some(version);
    if !(0..=2).contains(&version) {
        return None;
    }
    if version >= 1 {
        info.token_type = match r.uint()? {
            TOKEN_HIGH_WATER_MARK => Some(TokenType::HighWaterMark),
            TOKEN_EVENT => Some(TokenType::Event),
            _ => return None,
        };
    }
    info.txn_op_index = Some(r.uint()?);
    if version >= 1 {
        info.from_invalidate = match r.byte()? {
            BOOL_FALSE => Some(false),
            BOOL_TRUE => Some(true),
            _ => return None,
        };
    }
    if version == 0 {
        // Version 0 (MongoDB 3.6/4.0) is not read further.
        return None;
    }
    // The UUID: BinData subtype 4, null (v2), or nothing at all (the key ends).
    match r.peek() {
        None | Some(END) => {
            info.has_document_key = Some(false);
            return Some(());
        }
        Some(NULL) => {
            r.byte()?;
        }
        Some(BIN_DATA) => {
            r.byte()?;
            if r.byte()? != 16 || r.byte()? != 4 {
                return None;
            }
            let bytes: [u8; 16] = r.array()?;
            info.collection_uuid = Some(bson::Uuid::from_bytes(bytes));
        }
        Some(_) => return None,
    }
    // The event identifier: an object, or nothing.
    match r.byte() {
        None | Some(END) => {
            info.has_document_key = Some(false);
            return Some(());
        }
        Some(OBJECT) => {}
        Some(_) => return None,
    }
    if version == 1 {
        // The whole object is the document key.
        info.has_document_key = Some(true);
        return Some(());
    }
    // Version 2: {operationType: <string>, documentKey | operationDescription: ...}.
    if r.byte()? != STRING || !r.cstring_is(b"operationType")? || r.byte()? != STRING {
        return None;
    }
    info.event_type = Some(r.escaped_string()?);
    match r.byte()? {
        0 => {
            info.has_document_key = Some(false);
        }
        _generic_type => {
            info.has_document_key = Some(r.cstring_is(b"documentKey")?);
            let ctype = r.byte()?;
            skip_value(r, ctype, 0)?;
            if r.byte()? != 0 {
                return None;
            }
        }
    }
    match r.peek() {
        None | Some(END) => {}
        Some(_) => info.fragment_num = Some(r.uint()?),
    }
    Some(())
}

/// Skips the payload of a value of KeyString type `ctype` (its type byte already read).
/// `None` for a type it does not know how to skip (numbers with a fractional part or a
/// large magnitude, which need the type bits), for garbage, or for nesting beyond
/// [`MAX_DEPTH`].
fn skip_value(r: &mut Reader<'_>, ctype: u8, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match ctype {
        MIN_KEY | UNDEFINED | NULL | MAX_KEY | BOOL_FALSE | BOOL_TRUE | NUMERIC_ZERO
        | NUMERIC_NAN => Some(()),
        NUMERIC_POS_1_BYTE..=NUMERIC_POS_8_BYTE => {
            let n = usize::from(ctype - NUMERIC_POS_1_BYTE) + 1;
            let last = r.skip_to_last(n)?;
            // The low bit flags a fractional part, which follows in a form this does not read.
            (last & 1 == 0).then_some(())
        }
        NUMERIC_NEG_8_BYTE..=NUMERIC_NEG_1_BYTE => {
            let n = usize::from(NUMERIC_NEG_1_BYTE - ctype) + 1;
            // Negative numbers are stored inverted: the fractional flag is a clear low bit.
            let last = r.skip_to_last(n)?;
            (last & 1 == 1).then_some(())
        }
        STRING | CODE => r.escaped_string_len().map(|_| ()),
        OBJECT => skip_fields(r, depth + 1),
        ARRAY => loop {
            match r.byte()? {
                0 => return Some(()),
                element => skip_value(r, element, depth + 1)?,
            }
        },
        BIN_DATA => {
            let len = match r.byte()? {
                0xFF => usize::try_from(r.u32()?).ok()?,
                len => usize::from(len),
            };
            r.byte()?; // subtype
            r.skip(len)
        }
        OID => r.skip(12),
        DATE | TIMESTAMP => r.skip(8),
        REGEX => {
            r.skip_cstring()?;
            r.skip_cstring()
        }
        DB_REF => {
            let len = usize::try_from(r.u32()?).ok()?;
            r.skip(len)?;
            r.skip(12)
        }
        CODE_WITH_SCOPE => {
            r.escaped_string_len()?;
            skip_fields(r, depth + 1)
        }
        _ => None,
    }
}

/// Skips an object's fields (generic type byte, name, value) up to its `0` terminator.
fn skip_fields(r: &mut Reader<'_>, depth: usize) -> Option<()> {
    loop {
        if r.byte()? == 0 {
            return Some(());
        }
        r.skip_cstring()?;
        let ctype = r.byte()?;
        skip_value(r, ctype, depth)?;
    }
}

/// Bytes out of a hex string, read in place (no decoded copy).
struct Reader<'a> {
    hex: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// `None` unless the whole string is an even number of hex digits.
    fn new(data: &'a str) -> Option<Reader<'a>> {
        let hex = data.as_bytes();
        if !hex.len().is_multiple_of(2) || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        Some(Reader { hex, pos: 0 })
    }

    fn remaining(&self) -> usize {
        (self.hex.len() / 2).saturating_sub(self.pos)
    }

    fn peek(&self) -> Option<u8> {
        let i = self.pos.checked_mul(2)?;
        let pair = self.hex.get(i..i.checked_add(2)?)?;
        Some(nibble(*pair.first()?)? << 4 | nibble(*pair.get(1)?)?)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Skips `n` bytes, if there are that many.
    fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.remaining() {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Skips `n ≥ 1` bytes; the last of them.
    fn skip_to_last(&mut self, n: usize) -> Option<u8> {
        self.skip(n.checked_sub(1)?)?;
        self.byte()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        if N > self.remaining() {
            return None;
        }
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte()?;
        }
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    /// A non-negative integer stored as a KeyString number with no fractional part.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            NUMERIC_ZERO => Some(0),
            ctype @ NUMERIC_POS_1_BYTE..=NUMERIC_POS_8_BYTE => {
                let n = usize::from(ctype - NUMERIC_POS_1_BYTE) + 1;
                let mut raw: u64 = 0;
                for _ in 0..n {
                    raw = raw << 8 | u64::from(self.byte()?);
                }
                // The magnitude is shifted left once; the low bit flags a fraction.
                (raw & 1 == 0).then_some(raw >> 1)
            }
            _ => None,
        }
    }

    /// Reads a NUL-terminated string with no escapes (a field name, a regex part) and
    /// tells whether it is `name`, compared in place.
    fn cstring_is(&mut self, name: &[u8]) -> Option<bool> {
        let mut same = true;
        let mut i = 0usize;
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Some(same && i == name.len());
            }
            same &= name.get(i) == Some(&b);
            i = i.saturating_add(1);
        }
    }

    /// Skips a NUL-terminated string with no escapes.
    fn skip_cstring(&mut self) -> Option<()> {
        while self.byte()? != 0 {}
        Some(())
    }

    /// The length of a string whose NUL bytes are escaped as `00 FF`, ending at the first
    /// unescaped `00`; the reader is left after it.
    fn escaped_string_len(&mut self) -> Option<usize> {
        let mut len = 0usize;
        loop {
            if self.byte()? == 0 {
                if self.peek() != Some(0xFF) {
                    return Some(len);
                }
                self.pos += 1;
            }
            len += 1;
        }
    }

    /// An escaped string (see [`escaped_string_len`](Self::escaped_string_len)) as UTF-8.
    fn escaped_string(&mut self) -> Option<String> {
        let start = self.pos;
        let len = self.escaped_string_len()?;
        let mut bytes = Vec::with_capacity(len);
        let mut again = Reader {
            hex: self.hex,
            pos: start,
        };
        while bytes.len() < len {
            let b = again.byte()?;
            if b == 0 {
                again.byte()?; // the 0xFF of the escape
            }
            bytes.push(b);
        }
        String::from_utf8(bytes).ok()
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;
    use proptest::prelude::*;

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    fn info(hex: &str) -> TokenInfo {
        decode_resume_token_hex(hex).expect("a readable token")
    }

    // Source: the README of mongodb-js/mongodb-resumetoken-decoder (an insert on a
    // MongoDB 5.0 replica set, August 2021): a version-1 event token whose document key
    // is `{_id: "___x"}`.
    const V1_EVENT: &str = "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";

    #[test]
    fn v1_event_token_from_the_decoder_readme() {
        let i = info(V1_EVENT);
        assert_eq!(i.cluster_time, ts(1630438675, 1));
        assert_eq!(i.version, Some(1));
        assert_eq!(i.token_type, Some(TokenType::Event));
        assert_eq!(i.txn_op_index, Some(0));
        assert_eq!(i.from_invalidate, Some(false));
        assert_eq!(
            i.collection_uuid.map(|u| u.to_string()),
            Some("a5093abb-38fe-4b9e-a67f-01bb1a96d812".to_owned())
        );
        assert_eq!(i.has_document_key, Some(true));
        assert_eq!(
            i.event_type, None,
            "v1 tokens do not carry the operation type"
        );
        assert_eq!(i.fragment_num, None);
    }

    #[test]
    fn v1_high_water_mark_from_the_decoder_tests() {
        // Source: mongodb-js/mongodb-resumetoken-decoder test/index.ts, "can decode
        // non-document resume tokens" (t 1630496062, i 2, version 1, tokenType 0).
        let i = info("82612F653E000000022B0229296E04");
        assert_eq!(i.cluster_time, ts(1630496062, 2));
        assert_eq!(i.version, Some(1));
        assert_eq!(i.token_type, Some(TokenType::HighWaterMark));
        assert_eq!(i.txn_op_index, Some(0));
        assert_eq!(i.from_invalidate, Some(false));
        assert_eq!(i.collection_uuid, None);
        assert_eq!(i.has_document_key, Some(false));
    }

    #[test]
    fn v2_insert_token_from_the_decoder_tests() {
        // Source: mongodb-js/mongodb-resumetoken-decoder test/index.ts, "can decode new
        // resume tokens" (PM-1950): t 1651836794, i 1, version 2, an insert whose document
        // key is an ObjectId.
        let i = info(
            "826275077A000000012B042C0100296E5A1004BFFDB617400E486099007C0E0048B305463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F696400646275077A2F3159F971E405C6000004",
        );
        assert_eq!(i.cluster_time, ts(1651836794, 1));
        assert_eq!(i.version, Some(2));
        assert_eq!(i.token_type, Some(TokenType::Event));
        assert_eq!(
            i.collection_uuid.map(|u| u.to_string()),
            Some("bffdb617-400e-4860-9900-7c0e0048b305".to_owned())
        );
        assert_eq!(i.event_type.as_deref(), Some("insert"));
        assert_eq!(i.has_document_key, Some(true));
        assert_eq!(i.fragment_num, None);
    }

    #[test]
    fn v1_token_with_doubles_in_the_document_key() {
        // Source: mongodb-js/mongodb-resumetoken-decoder test/index.ts, "can decode resume
        // tokens with a tiny double in them" (document key `{_id: {foo: [2e307, ...]}}`).
        // Its cluster time is read from the bytes (0x65523992 = 1699887506).
        let i = info(
            "8265523992000000012B022C0100296E5A1004754B35D306B342E8BA0A3DE71005B66446465F6964004650666F6F0050337F78F63E7958E8661F808709C186A717992A6083F43058818C1A289F7C0BCFA77E73E500000004",
        );
        assert_eq!(i.cluster_time, ts(1699887506, 1));
        assert_eq!(i.version, Some(1));
        assert_eq!(i.has_document_key, Some(true));
    }

    #[test]
    fn v2_tokens_from_documentation_and_other_projects() {
        // (hex, cluster time, operationType, source)
        let cases = [
            (
                // The MongoDB manual, "Resume Tokens from Change Events"
                // (https://www.mongodb.com/docs/manual/changeStreams/#resume-tokens-from-change-events),
                // as quoted by Debezium's SourceInfoTest.
                "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F69640064635019A078BE67426D7CF4D2000004",
                ts(0x6350_19A0, 1),
                "insert",
            ),
            (
                // A C# CDC project's test: the event's clusterTime is {t: 1736793312, i: 2}.
                "8267855CE0000000022B042C0100296E5A1004394D1CDEF4AA4FB5AC600371893E6E98463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F6964006467855CE01C6EB237197D1491000004",
                ts(1736793312, 2),
                "insert",
            ),
            (
                // A blog post's mongosh output of an update on `{_id: "beer"}`, with
                // clusterTime Timestamp({t: 1700267321, i: 1}).
                "8265580539000000012B042C0100296E5A1004A7F55A5B35BD4C7DB2CD56C6CFEA9C49463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900463C5F6964003C6265657200000004",
                ts(1700267321, 1),
                "update",
            ),
            (
                // A Go resume-token parser's test ("v2 event"): {t: 1787596386, i: 2}.
                "826A8C8E62000000022B042C0100296E5A1004D802A00AB9E24901A92C71E85CC9ED82463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F696400646A8C8E62C1EC1FE8858052CF000004",
                ts(1787596386, 2),
                "insert",
            ),
        ];
        for (hex, cluster_time, op) in cases {
            let i = info(hex);
            assert_eq!(i.cluster_time, cluster_time, "{hex}");
            assert_eq!(i.version, Some(2), "{hex}");
            assert_eq!(i.token_type, Some(TokenType::Event), "{hex}");
            assert_eq!(i.txn_op_index, Some(0), "{hex}");
            assert_eq!(i.from_invalidate, Some(false), "{hex}");
            assert!(i.collection_uuid.is_some(), "{hex}");
            assert_eq!(i.event_type.as_deref(), Some(op), "{hex}");
            assert_eq!(i.has_document_key, Some(true), "{hex}");
            assert_eq!(i.fragment_num, None, "{hex}");
            // Lowercase hex reads the same.
            assert_eq!(info(&hex.to_ascii_lowercase()), i);
        }
    }

    #[test]
    fn v2_high_water_mark_has_a_null_uuid() {
        // Source: the same Go parser's test ("v2 high-water mark"): {t: 1787596388, i: 1}.
        let i = info("826A8C8E64000000012B0429296E1404");
        assert_eq!(i.cluster_time, ts(1787596388, 1));
        assert_eq!(i.version, Some(2));
        assert_eq!(i.token_type, Some(TokenType::HighWaterMark));
        assert_eq!(i.collection_uuid, None);
        assert_eq!(i.has_document_key, Some(false));
        assert_eq!(i.event_type, None);
    }

    #[test]
    fn fragment_tokens_carry_their_fragment_number() {
        // A fragment's token is its event's token with `fragmentNum` appended before the
        // end byte (server resume_token.cpp; SERVER-107526: "for the first fragment it is
        // always '904'", i.e. 0x29 = zero, then the end byte 0x04).
        let event = "826A8C8E62000000022B042C0100296E5A1004D802A00AB9E24901A92C71E85CC9ED82463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F696400646A8C8E62C1EC1FE8858052CF0000";
        let first = info(&format!("{event}2904"));
        assert_eq!(first.fragment_num, Some(0));
        assert_eq!(first.event_type.as_deref(), Some("insert"));
        // fragmentNum 2: a positive one-byte integer, the magnitude shifted left once.
        assert_eq!(info(&format!("{event}2B0404")).fragment_num, Some(2));
        assert_eq!(info(&format!("{event}2C012C04")).fragment_num, Some(150));
        // A fraction flag, or garbage, leaves it unknown but the rest read.
        let odd = info(&format!("{event}2B0504"));
        assert_eq!(odd.fragment_num, None);
        assert_eq!(odd.has_document_key, Some(true));
    }

    #[test]
    fn operation_description_instead_of_document_key() {
        // A v2 `create` (expanded event) token: `{operationType: "create",
        // operationDescription: {idIndex: {v: 2}}}`, encoded by hand from the layout.
        let hex = concat!(
            "8265000000000000072B042C0100296E5A1004",
            "00112233445566778899AABBCCDDEEFF",
            "46",
            "3C",
            "6F7065726174696F6E5479706500", // "operationType"
            "3C",
            "63726561746500", // "create"
            "46",
            "6F7065726174696F6E4465736372697074696F6E00", // "operationDescription"
            "46",
            "46",
            "6964496E64657800",
            "46",
            "1E",
            "7600",
            "2B04",
            "00",
            "00",
            "00",
            "04",
        );
        let i = info(hex);
        assert_eq!(i.cluster_time, ts(0x6500_0000, 7));
        assert_eq!(i.event_type.as_deref(), Some("create"));
        assert_eq!(i.has_document_key, Some(false));
        assert_eq!(i.fragment_num, None);
    }

    #[test]
    fn operation_type_with_an_escaped_nul() {
        // NUL bytes inside strings are escaped as 00 FF.
        let hex =
            "8200000001000000022B042C0100296E14463C6F7065726174696F6E54797065003C6100FF62000000";
        assert_eq!(info(hex).event_type.as_deref(), Some("a\0b"));
    }

    #[test]
    fn invalidate_token() {
        // A v1 invalidate after a drop: fromInvalidate true (0x6F), uuid, no document key.
        let i = info("82612E8513000000012B022C0100296F5A1004A5093ABB38FE4B9EA67F01BB1A96D81204");
        assert_eq!(i.from_invalidate, Some(true));
        assert_eq!(i.has_document_key, Some(false));
    }

    #[test]
    fn testkit_tokens() {
        // The format strings of brook_testkit::shapes::{resume_token, post_batch_resume_token}
        // (the testkit is not a dependency of this crate). Its event tokens carry a 4-byte
        // sequence number where a 16-byte UUID belongs: the cluster time and the leading
        // fields still read, the rest is unknown.
        let seq = 7u32;
        let event = format!(
            "82{:08X}{:08X}2B042C0100296E5A1004{:08X}463C5F6964003C0004",
            1_700_000_000u32, 3u32, seq
        );
        let i = info(&event);
        assert_eq!(i.cluster_time, ts(1_700_000_000, 3));
        assert_eq!(i.version, Some(2));
        assert_eq!(i.token_type, Some(TokenType::Event));
        assert_eq!(i.from_invalidate, Some(false));
        assert_eq!(i.collection_uuid, None);
        assert_eq!(i.has_document_key, None);

        let hwm = format!("82{:08X}{:08X}2B0229296E04", 1_700_000_000u32, 4u32);
        let i = info(&hwm);
        assert_eq!(i.cluster_time, ts(1_700_000_000, 4));
        assert_eq!(i.token_type, Some(TokenType::HighWaterMark));
    }

    #[test]
    fn version_zero_reads_the_cluster_time_only_and_the_txn_index() {
        // clusterTime, version 0, txnOpIndex 3 (0x2B06), then a uuid and a document key.
        let i = info("825B00000000000001292B065A100400112233445566778899AABBCCDDEEFF04");
        assert_eq!(i.cluster_time, ts(0x5B00_0000, 1));
        assert_eq!(i.version, Some(0));
        assert_eq!(i.txn_op_index, Some(3));
        assert_eq!(i.token_type, None);
        assert_eq!(i.from_invalidate, None);
        assert_eq!(i.has_document_key, None);
    }

    #[test]
    fn unknown_versions_and_types_leave_fields_unknown() {
        // version 3
        let i = info("82612F653E000000022B0629296E04");
        assert_eq!(i.version, Some(3));
        assert_eq!(i.token_type, None);
        // token type 5
        let i = info("82612F653E000000022B022B0A296E04");
        assert_eq!(i.token_type, None);
        assert_eq!(i.txn_op_index, None);
    }

    #[test]
    fn garbage_is_unknown() {
        for hex in [
            "",
            "8",
            "82",
            "82612F653E",
            "82612F653E0000000",  // odd length
            "83612F653E00000002", // not a Timestamp first
            "82612F653E0000000G",
            "８２",
            "82612F653E00000002 ",
        ] {
            assert_eq!(decode_resume_token_hex(hex), None, "{hex:?}");
        }
        // Truncated after the cluster time: the cluster time still reads.
        assert_eq!(info("82612F653E00000002").version, None);
        assert_eq!(info("82612F653E000000022B").version, None);
    }

    #[test]
    fn the_document_form() {
        let token = rawdoc! { "_data": V1_EVENT };
        assert_eq!(decode_resume_token(&token), Some(info(V1_EVENT)));
        let with_type_bits = rawdoc! {
            "_data": V1_EVENT,
            "_typeBits": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0x40] },
        };
        assert_eq!(decode_resume_token(&with_type_bits), Some(info(V1_EVENT)));
        // MongoDB 3.6 tokens are BinData; other shapes are unknown.
        let binary = rawdoc! {
            "_data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0x82, 0] },
        };
        assert_eq!(decode_resume_token(&binary), None);
        assert_eq!(decode_resume_token(&rawdoc! {}), None);
        assert_eq!(decode_resume_token(&rawdoc! { "_data": 5 }), None);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // A v2 token whose documentKey is 10,000 nested arrays: no stack overflow, the
        // fragment number after it is left unknown.
        let mut hex = String::from(
            "8200000001000000022B042C0100296E14463C6F7065726174696F6E54797065003C780046646F63756D656E744B657900",
        );
        hex.push_str(&"50".repeat(10_000));
        hex.push_str(&"00".repeat(10_000));
        hex.push_str("002904");
        let i = info(&hex);
        assert_eq!(i.event_type.as_deref(), Some("x"));
        assert_eq!(i.has_document_key, Some(true));
        assert_eq!(i.fragment_num, None);
    }

    /// Encodes a non-negative integer the way the server's KeyString does.
    fn encode_uint(n: u64) -> String {
        if n == 0 {
            return "29".to_owned();
        }
        let raw = u128::from(n) << 1;
        let bytes = raw.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(15);
        let len = 16 - first;
        let mut hex = format!("{:02X}", 42 + len);
        for b in &bytes[first..] {
            hex.push_str(&format!("{b:02X}"));
        }
        hex
    }

    proptest! {
        #[test]
        fn random_hex_never_panics(s in "[0-9a-fA-F]{0,300}") {
            let _ = decode_resume_token_hex(&s);
        }

        #[test]
        fn random_strings_never_panic(s in ".{0,200}") {
            let _ = decode_resume_token_hex(&s);
        }

        #[test]
        fn random_bytes_after_a_cluster_time_never_panic(
            time: u32,
            increment: u32,
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut hex = format!("82{time:08X}{increment:08X}");
            for b in &tail {
                hex.push_str(&format!("{b:02X}"));
            }
            let i = decode_resume_token_hex(&hex).expect("a cluster time");
            prop_assert_eq!(i.cluster_time, Timestamp { time, increment });
        }

        #[test]
        fn hand_encoded_tokens_round_trip(
            time: u32,
            increment: u32,
            txn in 0u64..(1 << 62),
            event: bool,
            fragment in proptest::option::of(0u64..1000),
        ) {
            let mut hex = format!("82{time:08X}{increment:08X}2B04");
            hex.push_str(if event { "2C0100" } else { "29" });
            hex.push_str(&encode_uint(txn));
            hex.push_str("6E");
            if event {
                hex.push_str("5A100400112233445566778899AABBCCDDEEFF");
                hex.push_str("463C6F7065726174696F6E54797065003C64656C6574650046646F63756D656E744B657900463C5F6964003C6B000000");
                if let Some(f) = fragment {
                    hex.push_str(&encode_uint(f));
                }
            } else {
                hex.push_str("14");
            }
            hex.push_str("04");
            let i = decode_resume_token_hex(&hex).expect("readable");
            prop_assert_eq!(i.cluster_time, Timestamp { time, increment });
            prop_assert_eq!(i.version, Some(2));
            prop_assert_eq!(i.txn_op_index, Some(txn));
            prop_assert_eq!(i.token_type, Some(if event { TokenType::Event } else { TokenType::HighWaterMark }));
            prop_assert_eq!(i.has_document_key, Some(event));
            prop_assert_eq!(i.event_type.as_deref(), event.then_some("delete"));
            prop_assert_eq!(i.fragment_num, if event { fragment } else { None });
        }
    }
}
