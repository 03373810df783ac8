//! Every shader variant the engine can build parses and validates with naga,
//! and translates through naga's MSL and HLSL backends, which is what wgpu
//! does for Metal and DX12 users. Needs no GPU, so it runs everywhere, first.

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
    let mut skipped = 0;
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
            let needs_subgroups =
                defines.get("GROUPS").is_some_and(|g| g != "0") || path.ends_with("_sg.wgsl");
            if needs_subgroups && !tier.subgroups() {
                skipped += 1;
                continue;
            }
            let mut defines = defines.clone();
            defines.extend(tier.defines());
            let what = format!("{path} {defines:?}");
            let src = shader::preprocess(path, &defines).unwrap_or_else(|e| panic!("{what}: {e}"));
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
            v.subgroup_operations(naga::valid::SubgroupOperationSet::all());
            let info = v
                .validate(&module)
                .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            translate_msl(&module, &info, tier).unwrap_or_else(|e| panic!("{what}: {e}"));
            translate_hlsl(&module, &info, tier).unwrap_or_else(|e| panic!("{what}: {e}"));
            checked += 1;
        }
    }
    assert!(skipped > 0 && checked > 0);
    assert_eq!(checked + skipped, 4 * variants.len());
}

/// The Metal Shading Language versions wgpu (30) targets, oldest and newest
/// that matter: it picks the device's newest, so a kernel must translate at
/// the oldest one that has the tier's features (subgroup operations need
/// MSL 2.1; `half` exists everywhere) and at the newest.
fn msl_versions(tier: Tier) -> [(u8, u8); 2] {
    [if tier.subgroups() { (2, 1) } else { (2, 0) }, (3, 2)]
}

fn translate_msl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    tier: Tier,
) -> Result<(), String> {
    for lang_version in msl_versions(tier) {
        let options = naga::back::msl::Options {
            lang_version,
            // What wgpu-hal's Metal backend sets for compute kernels.
            zero_initialize_workgroup_memory: true,
            force_loop_bounding: true,
            ..Default::default()
        };
        let (src, _) = naga::back::msl::write_string(
            module,
            info,
            &options,
            &naga::back::msl::PipelineOptions::default(),
        )
        .map_err(|e| format!("MSL {lang_version:?}: {e}"))?;
        if !src.contains("kernel void ") {
            return Err(format!(
                "MSL {lang_version:?}: no compute entry point in:\n{src}"
            ));
        }
    }
    Ok(())
}

/// HLSL shader models: wgpu's DX12 backend needs SM 6.0 (DXC), and 16-bit
/// types need SM 6.2; the newest it asks for is 6.9 when the driver has it.
fn translate_hlsl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    tier: Tier,
) -> Result<(), String> {
    use naga::back::hlsl::ShaderModel;
    let oldest = if tier.native_f16() {
        ShaderModel::V6_2
    } else {
        ShaderModel::V6_0
    };
    for shader_model in [oldest, ShaderModel::V6_9] {
        let options = naga::back::hlsl::Options {
            shader_model,
            ..Default::default()
        };
        let mut src = String::new();
        let pipeline = naga::back::hlsl::PipelineOptions::default();
        naga::back::hlsl::Writer::new(&mut src, &options, &pipeline)
            .write(module, info, None)
            .map_err(|e| format!("HLSL {shader_model:?}: {e}"))?;
        if !src.contains("[numthreads(") {
            return Err(format!(
                "HLSL {shader_model:?}: no compute entry point in:\n{src}"
            ));
        }
    }
    Ok(())
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
