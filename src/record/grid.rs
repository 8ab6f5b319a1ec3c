//! OpenVidu's BEST_FIT recording layout as rectangles: the page OpenVidu 2 records
//! (`layout-best-fit`, openvidu-layout with `minRatio` 9/16, `maxRatio` 3/2, `fixedRatio`
//! false) tries every column count, takes `rows = ceil(n / cols)`, clamps each tile's
//! height/width ratio into [9/16, 3/2] and keeps the arrangement covering the most area; rows
//! are centred, the last (shorter) row too, and the block is centred vertically on a black
//! background. Each video then keeps its own aspect inside its tile (letterboxed: the
//! composer's `sizing-policy=keep-aspect-ratio`). Sans-IO arithmetic, no allocation per call
//! beyond the result.

/// A tile: top-left corner and size, in output pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

/// Narrowest and widest tile (height / width) BEST_FIT uses.
const MAX_RATIO: f64 = 3.0 / 2.0;
const MIN_RATIO: f64 = 9.0 / 16.0;

/// Columns and rows BEST_FIT picks for `n` videos in `width` x `height`, with the tile size.
pub fn best_dimensions(n: usize, width: u32, height: u32) -> (usize, usize, f64, f64) {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let mut best = (1, 1, w, h);
    let mut best_area = -1.0;
    for cols in 1..=n.max(1) {
        let rows = n.max(1).div_ceil(cols);
        let mut th = (h / rows as f64).floor();
        let mut tw = (w / cols as f64).floor();
        let ratio = th / tw.max(1.0);
        if ratio > MAX_RATIO {
            th = tw * MAX_RATIO;
        } else if ratio < MIN_RATIO {
            tw = th / MIN_RATIO;
        }
        let area = tw * th * n as f64;
        if area > best_area {
            best_area = area;
            best = (cols, rows, tw, th);
        }
    }
    best
}

/// The tiles of `n` videos, in order (row by row), for an output of `width` x `height`.
pub fn best_fit(n: usize, width: u32, height: u32) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let (cols, rows, tw, th) = best_dimensions(n, width, height);
    let top = ((f64::from(height) - th * rows as f64) / 2.0).max(0.0);
    let mut out = Vec::with_capacity(n);
    for row in 0..rows {
        let in_row = cols.min(n - row * cols);
        let left = ((f64::from(width) - tw * in_row as f64) / 2.0).max(0.0);
        for c in 0..in_row {
            let x = (left + tw * c as f64).round() as i32;
            let y = (top + th * row as f64).round() as i32;
            let x2 = (left + tw * (c + 1) as f64).round() as i32;
            let y2 = (top + th * (row + 1) as f64).round() as i32;
            out.push(Rect { x, y, w: (x2 - x).max(1), h: (y2 - y).max(1) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(r: &Rect, w: i32, h: i32) -> bool {
        r.x >= 0 && r.y >= 0 && r.x + r.w <= w && r.y + r.h <= h
    }

    fn overlap(a: &Rect, b: &Rect) -> bool {
        a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
    }

    #[test]
    fn one_video_fills_the_frame() {
        assert_eq!(best_fit(1, 1280, 720), vec![Rect { x: 0, y: 0, w: 1280, h: 720 }]);
    }

    #[test]
    fn two_side_by_side_letterboxed_vertically() {
        // Two columns of 640x720 (ratio 1.125, inside [9/16, 3/2]) beat two rows of 1280x360.
        let r = best_fit(2, 1280, 720);
        assert_eq!(
            r,
            vec![Rect { x: 0, y: 0, w: 640, h: 720 }, Rect { x: 640, y: 0, w: 640, h: 720 }]
        );
    }

    #[test]
    fn columns_and_rows_by_count() {
        let dims = |n| {
            let (c, r, _, _) = best_dimensions(n, 1280, 720);
            (c, r)
        };
        assert_eq!(dims(1), (1, 1));
        assert_eq!(dims(2), (2, 1));
        assert_eq!(dims(3), (3, 1));
        assert_eq!(dims(4), (2, 2));
        assert_eq!(dims(5), (3, 2));
        assert_eq!(dims(6), (3, 2));
        assert_eq!(dims(9), (3, 3));
    }

    #[test]
    fn last_row_is_centred() {
        let r = best_fit(3, 1280, 1280);
        // 2 columns x 2 rows: the third tile alone, centred.
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].y, r[0].y + r[0].h);
        assert_eq!(r[2].x, (1280 - r[2].w) / 2);
    }

    #[test]
    fn tiles_stay_inside_and_never_overlap() {
        for (w, h) in [(1280, 720), (640, 480), (1920, 1080), (100, 1999), (1999, 100)] {
            for n in 1..=16 {
                let r = best_fit(n, w, h);
                assert_eq!(r.len(), n);
                for (i, a) in r.iter().enumerate() {
                    assert!(inside(a, w as i32, h as i32), "{n} in {w}x{h}: {a:?}");
                    let ratio = f64::from(a.h) / f64::from(a.w);
                    assert!((0.5..=1.6).contains(&ratio), "{n} in {w}x{h}: ratio {ratio}");
                    for b in &r[i + 1..] {
                        assert!(!overlap(a, b), "{n} in {w}x{h}: {a:?} {b:?}");
                    }
                }
            }
        }
    }
}
