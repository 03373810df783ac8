//! Capability tiers: which optional GPU features the kernels use. Chosen once
//! per device from the adapter (or forced), turned into shader defines in one
//! place (`Gpu::pipeline`), so ops never branch on features.

use crate::shader::Defines;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Core WGSL only: f16 unpacked from u32, reductions in workgroup memory.
    /// Runs on every WebGPU implementation and on llvmpipe GL.
    Portable,
    /// Native f16 (`shader-f16`) for packed halves.
    F16,
    /// Subgroup reductions (`subgroups`), no f16.
    Subgroup,
    /// Both.
    Full,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Portable, Tier::F16, Tier::Subgroup, Tier::Full];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::F16 => "f16",
            Tier::Subgroup => "subgroup",
            Tier::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == s.to_ascii_lowercase())
    }

    pub fn native_f16(self) -> bool {
        matches!(self, Tier::F16 | Tier::Full)
    }

    pub fn subgroups(self) -> bool {
        matches!(self, Tier::Subgroup | Tier::Full)
    }

    /// The features this tier needs from the device.
    pub fn features(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        if self.native_f16() {
            f |= wgpu::Features::SHADER_F16;
        }
        if self.subgroups() {
            f |= wgpu::Features::SUBGROUP;
        }
        f
    }

    /// The highest tier `features` allow.
    pub fn best(features: wgpu::Features) -> Tier {
        match (
            features.contains(wgpu::Features::SHADER_F16),
            features.contains(wgpu::Features::SUBGROUP),
        ) {
            (true, true) => Tier::Full,
            (true, false) => Tier::F16,
            (false, true) => Tier::Subgroup,
            (false, false) => Tier::Portable,
        }
    }

    /// The tiers an adapter with `features` can run.
    pub fn supported(features: wgpu::Features) -> Vec<Tier> {
        Tier::ALL
            .into_iter()
            .filter(|t| features.contains(t.features()))
            .collect()
    }

    /// Shader defines for this tier (merged into every kernel's defines).
    pub fn defines(self) -> Defines {
        let b = |v: bool| if v { "1" } else { "0" }.to_string();
        Defines::from([
            ("NATIVE_F16".to_string(), b(self.native_f16())),
            ("SUBGROUPS".to_string(), b(self.subgroups())),
        ])
    }
}
