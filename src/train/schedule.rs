//! Learning-rate schedules with linear warmup, as transformers' `get_scheduler` defines them.

/// The shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The peak rate throughout.
    Constant,
    /// Linear decay from the peak to 0 at the last step.
    Linear,
    /// Half a cosine from the peak to 0 at the last step.
    Cosine,
}

impl Schedule {
    /// Parses `constant`, `linear` or `cosine`.
    pub fn from_name(name: &str) -> Option<Schedule> {
        match name {
            "constant" => Some(Schedule::Constant),
            "linear" => Some(Schedule::Linear),
            "cosine" => Some(Schedule::Cosine),
            _ => None,
        }
    }

    /// The name [`Schedule::from_name`] parses.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }
    }

    /// The learning rate at `step` (0-based) of `total`, peaking at `peak` after `warmup` steps of
    /// linear increase. Step `i` of the warmup uses `peak · (i + 1) / warmup`, so no step trains
    /// at rate 0; after it, the rate decays over the remaining steps.
    pub fn lr(self, peak: f32, step: u64, total: u64, warmup: u64) -> f32 {
        if step < warmup {
            return peak * (step + 1) as f32 / warmup as f32;
        }
        let decay_steps = total.saturating_sub(warmup).max(1);
        let progress = ((step - warmup) as f32 / decay_steps as f32).min(1.0);
        match self {
            Schedule::Constant => peak,
            Schedule::Linear => peak * (1.0 - progress),
            Schedule::Cosine => peak * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let lr = |s, step| Schedule::lr(s, 1.0, step, 10, 2);
        assert_eq!((lr(Schedule::Cosine, 0), lr(Schedule::Cosine, 1)), (0.5, 1.0));
        assert_eq!(lr(Schedule::Cosine, 2), 1.0);
        assert!((lr(Schedule::Cosine, 6) - 0.5).abs() < 1e-6, "half way through the decay");
        assert!((lr(Schedule::Linear, 6) - 0.5).abs() < 1e-6);
        assert!(lr(Schedule::Linear, 9) > 0.0 && lr(Schedule::Linear, 9) <= 0.125 + 1e-6);
        assert_eq!(lr(Schedule::Constant, 9), 1.0);
        assert_eq!(Schedule::from_name("cosine"), Some(Schedule::Cosine));
        assert_eq!(Schedule::from_name("exp"), None);
    }
}
