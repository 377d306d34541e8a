//! How transport messages are told apart on an RDM endpoint. One-way
//! messages are untagged; requests and responses are tagged, the tag saying
//! which and the request's id. The remote CQ data of each says who sent it
//! (the sender's handle in the receiver's address vector), so no header is
//! copied in front of the caller's bytes.
//!
//! One-way messages go untagged because providers keep untagged and tagged
//! receives in separate queues: a one-way message then never walks past the
//! request receives a serving node keeps posted (64 by default). When it was
//! tagged, shm compared each one against all of them: about 3,500 of the
//! serving node's 7,700 instructions per message.

/// The two top bits of a tag: what the message is (0 is not used).
const KIND_SHIFT: u32 = 62;
/// The bits that carry a request's id.
pub(crate) const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// A request awaiting a response.
pub(crate) const REQUEST: u64 = 1 << KIND_SHIFT;
/// The response to the request with the same id.
pub(crate) const RESPONSE: u64 = 2 << KIND_SHIFT;

/// The tag of a response to request `id`.
pub(crate) fn response(id: u64) -> u64 {
    RESPONSE | (id & ID_MASK)
}

/// The tag of request `id`.
pub(crate) fn request(id: u64) -> u64 {
    REQUEST | (id & ID_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(tag: u64) -> u64 {
        tag & !ID_MASK
    }

    #[test]
    fn kinds_and_ids_do_not_overlap() {
        let id = u64::MAX;
        assert_eq!(kind(request(id)), REQUEST);
        assert_eq!(kind(response(id)), RESPONSE);
        assert_eq!(response(id) & ID_MASK, ID_MASK);
        for id in [0, 1, ID_MASK, u64::MAX] {
            assert_ne!(kind(request(id)), 0, "a request's tag is never a plain tag");
            assert_ne!(kind(request(id)), kind(response(id)));
        }
    }
}
