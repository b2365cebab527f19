//! Which rungs a source gets, at which sizes, and where each rung scales from. Pure functions.

use crate::config::RungConfig;

/// A rung chosen for a particular source size.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRung {
    pub config: RungConfig,
    pub width: u32,
    pub height: u32,
}

/// Rounds to the nearest even number, at least 2 (4:2:0 needs even dimensions).
fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// Plans the ladder for a `width`×`height` source: every rung whose size (the short side for
/// portrait sources) does not exceed the source's, with the other side following the source's
/// aspect ratio and square pixels. A source smaller than every rung gets the lowest rung's
/// settings at its own size, so it is never upscaled and never left without output.
pub fn plan_ladder(rungs: &[RungConfig], width: u32, height: u32) -> Vec<PlannedRung> {
    let portrait = height > width;
    let short = width.min(height);
    let long = width.max(height);
    let mut planned: Vec<PlannedRung> = rungs
        .iter()
        .filter(|r| r.height <= short)
        .map(|r| {
            let (s, l) = if r.height == short {
                (short & !1, long & !1)
            } else {
                (
                    r.height & !1,
                    even(f64::from(long) * f64::from(r.height) / f64::from(short)),
                )
            };
            let (w, h) = if portrait { (s, l) } else { (l, s) };
            PlannedRung {
                config: r.clone(),
                width: w,
                height: h,
            }
        })
        .collect();
    if planned.is_empty() {
        if let Some(lowest) = rungs.iter().min_by_key(|r| r.height) {
            planned.push(PlannedRung {
                config: RungConfig {
                    name: format!("{}p", short & !1),
                    ..lowest.clone()
                },
                width: (width & !1).max(2),
                height: (height & !1).max(2),
            });
        }
    }
    planned.sort_by_key(|p| p.width * p.height);
    planned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TranscodeConfig;

    fn sizes(w: u32, h: u32) -> Vec<(String, u32, u32)> {
        plan_ladder(&TranscodeConfig::default().rungs, w, h)
            .into_iter()
            .map(|p| (p.config.name, p.width, p.height))
            .collect()
    }

    #[test]
    fn full_ladder_from_1080p() {
        assert_eq!(
            sizes(1920, 1080),
            vec![
                ("360p".into(), 640, 360),
                ("480p".into(), 854, 480),
                ("720p".into(), 1280, 720)
            ]
        );
    }

    #[test]
    fn never_upscales() {
        assert_eq!(
            sizes(854, 480),
            vec![("360p".into(), 640, 360), ("480p".into(), 854, 480)]
        );
        assert_eq!(sizes(640, 360), vec![("360p".into(), 640, 360)]);
    }

    #[test]
    fn odd_and_portrait_sources() {
        assert_eq!(
            sizes(1366, 768),
            vec![
                ("360p".into(), 640, 360),
                ("480p".into(), 854, 480),
                ("720p".into(), 1280, 720)
            ]
        );
        assert_eq!(
            sizes(720, 1280),
            vec![
                ("360p".into(), 360, 640),
                ("480p".into(), 480, 854),
                ("720p".into(), 720, 1280)
            ]
        );
        // 4:3 keeps square pixels.
        assert_eq!(sizes(640, 480)[1], ("480p".into(), 640, 480));
        assert_eq!(sizes(640, 480)[0], ("360p".into(), 480, 360));
    }

    #[test]
    fn tiny_source_gets_one_rung_at_its_size() {
        let s = sizes(320, 240);
        assert_eq!(s, vec![("240p".into(), 320, 240)]);
        let s = sizes(321, 181);
        assert_eq!(s, vec![("180p".into(), 320, 180)]);
    }

    proptest::proptest! {
        #[test]
        fn sizes_are_even_and_within_the_source(w in 2u32..5000, h in 2u32..5000) {
            for p in plan_ladder(&TranscodeConfig::default().rungs, w, h) {
                proptest::prop_assert!(p.width % 2 == 0 && p.height % 2 == 0);
                proptest::prop_assert!(p.width <= w.max(2) && p.height <= h.max(2), "{p:?} from {w}x{h}");
            }
        }
    }
}
