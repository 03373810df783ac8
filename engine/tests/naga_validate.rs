//! Every shader variant the engine can build parses and validates with naga.
//! Needs no GPU, so it runs everywhere, first.

use lottery_engine::{ops, shader, Tier};

#[test]
fn every_variant_validates() {
    let variants = ops::all_variants();
    assert!(
        variants.len() > 20,
        "expected the full variant list, got {}",
        variants.len()
    );
    let mut checked = 0;
    for tier in Tier::ALL {
        // unpack2x16float/pack2x16float need SHADER_FLOAT16_IN_FLOAT32: every
        // WebGPU implementation and wgpu's native backends have it.
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if tier.native_f16() {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        if tier.subgroups() {
            caps |= naga::valid::Capabilities::SUBGROUP;
        }
        for (path, defines) in &variants {
            let mut defines = defines.clone();
            defines.extend(tier.defines());
            let what = format!("{path} {defines:?}");
            let src = shader::preprocess(path, &defines).unwrap_or_else(|e| panic!("{what}: {e}"));
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
            v.subgroup_operations(naga::valid::SubgroupOperationSet::all());
            v.validate(&module)
                .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * variants.len());
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
