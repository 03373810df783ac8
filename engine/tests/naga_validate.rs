//! Every shader variant the engine can build parses and validates with naga.
//! Needs no GPU, so it runs everywhere, first.

use lottery_engine::{ops, shader};

#[test]
fn every_variant_validates() {
    // unpack2x16float/pack2x16float need this capability; every WebGPU
    // implementation and wgpu's Vulkan, Metal, DX12 and GL 4.2+/ES 3.0+ paths have it.
    let caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let variants = ops::all_variants();
    assert!(
        variants.len() > 20,
        "expected the full variant list, got {}",
        variants.len()
    );
    for (path, defines) in variants {
        let src = shader::preprocess(path, &defines)
            .unwrap_or_else(|e| panic!("{path} {defines:?}: {e}"));
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{path} {defines:?}: {}", e.emit_to_string(&src)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        v.validate(&module)
            .unwrap_or_else(|e| panic!("{path} {defines:?}: {}", e.emit_to_string(&src)));
    }
}

/// A new .wgsl file that is not registered in `shader::SOURCES` would never
/// be validated or shipped; catch it here.
#[test]
fn every_wgsl_file_is_embedded() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut stack = vec![root.clone()];
    let mut found = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "wgsl") {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                assert!(
                    shader::source(&rel).is_some(),
                    "{rel} is not listed in engine/src/shader/mod.rs"
                );
                found += 1;
            }
        }
    }
    assert_eq!(found, shader::SOURCES.len());
}
