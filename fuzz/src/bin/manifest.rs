//! The model manifest (`manifest.yaml`): fuzz bytes through `Manifest::from_yaml`. Oracle: no
//! panic, and a manifest that validates gives an input spec the pre-processor accepts.

use std::path::Path;

use nestdnn::model::Manifest;
use nestdnn::preprocess::Preprocessor;

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match Manifest::from_yaml(Path::new("manifest.yaml"), text) {
            Ok(m) => {
                let _ = m.largest();
                if let Err(e) = Preprocessor::new(&m.input, None) {
                    panic!("validated manifest, input spec refused: {e}");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
