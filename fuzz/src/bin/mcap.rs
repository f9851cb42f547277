//! MCAP reading: a `.mcap` file of fuzz bytes through `BagReader::open`, the topics' QoS
//! YAML, and every message, decoded. Oracle: no panic, and reading ends (at most one item per
//! byte of file, plus the final empty-bag error).

fn main() {
    let path = nestdnn_fuzz::scratch("fuzz.mcap");
    afl::fuzz_nohook!(|data: &[u8]| {
        std::fs::write(&path, data).expect("write scratch file");
        nestdnn_fuzz::read_bag(&path, data.len());
    });
}
