//! rosbag2 sqlite3 reading: a `.db3` file of fuzz bytes through `BagReader::open`, the
//! topics' QoS YAML, and every message, decoded. Oracle as for `mcap`.

fn main() {
    let path = nestdnn_fuzz::scratch("fuzz.db3");
    afl::fuzz_nohook!(|data: &[u8]| {
        std::fs::write(&path, data).expect("write scratch file");
        nestdnn_fuzz::read_bag(&path, data.len());
    });
}
