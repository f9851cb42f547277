//! CDR decoding of every message type the node receives (Image, CompressedImage,
//! ResourceBudget, TaskPriority, and Classification from bags). Oracle: no panic; a message
//! that decodes re-encodes, and the re-encoding decodes to the same bytes again.

use nestdnn::bag::BagMessage;
use nestdnn::msgs::{
    Classification, CompressedImage, Image, ResourceBudget, RosMessage, TaskPriority,
};

fn check<M: RosMessage>(data: &[u8]) {
    if let Ok(m) = M::from_cdr(data) {
        let once = m.to_cdr().expect("a decoded message re-encodes");
        let again = M::from_cdr(&once).expect("a re-encoded message decodes");
        let twice = again.to_cdr().expect("re-encodes again");
        assert_eq!(
            once,
            twice,
            "{}: CDR round trip is not stable",
            M::TYPE_NAME
        );
    }
}

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        check::<Image>(data);
        check::<CompressedImage>(data);
        check::<ResourceBudget>(data);
        check::<TaskPriority>(data);
        check::<Classification>(data);
        for t in [
            Image::TYPE_NAME,
            CompressedImage::TYPE_NAME,
            ResourceBudget::TYPE_NAME,
            TaskPriority::TYPE_NAME,
        ] {
            let _ = BagMessage::decode(t, data);
        }
    });
}
