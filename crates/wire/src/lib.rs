//! OP_MSG framing (being written).
