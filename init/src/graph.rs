//! The dependency graph: cycles (for `check-config`), reverse edges (for shutdown order) and a
//! topological order (for the start plan in the log).
//!
//! Why separate: both the validator and the supervisor need graph facts, and graph code is
//! easiest to trust when it is small, pure and tested on its own.

/// `deps[i]` lists the daemons daemon `i` depends on. Returns every elementary cycle found by a
/// depth-first search, each as the list of nodes along it (first node repeated at the end is
/// left to the caller), deduplicated by rotation.
pub fn find_cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    fn visit(
        v: usize,
        deps: &[Vec<usize>],
        color: &mut [Color],
        stack: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        color[v] = Color::Gray;
        stack.push(v);
        for &w in &deps[v] {
            match color[w] {
                Color::White => visit(w, deps, color, stack, out),
                Color::Gray => {
                    if let Some(pos) = stack.iter().position(|&x| x == w) {
                        let mut cycle = stack[pos..].to_vec();
                        // Normalise the rotation so the same cycle found twice is reported once.
                        if let Some(min_at) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, &x)| x)
                            .map(|(i, _)| i)
                        {
                            cycle.rotate_left(min_at);
                        }
                        if !out.contains(&cycle) {
                            out.push(cycle);
                        }
                    }
                }
                Color::Black => {}
            }
        }
        stack.pop();
        color[v] = Color::Black;
    }
    let mut color = vec![Color::White; deps.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for v in 0..deps.len() {
        if color[v] == Color::White {
            visit(v, deps, &mut color, &mut stack, &mut out);
        }
    }
    out
}

/// Reverse edges: `dependents[i]` lists the daemons that depend on `i` (they stop before it).
pub fn dependents(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            if !out[d].contains(&i) {
                out[d].push(i);
            }
        }
    }
    out
}

/// Start levels of an acyclic graph: level 0 has no dependencies, level n depends only on
/// lower levels. Daemons in one level start in parallel. Returns `None` on a cycle.
pub fn levels(deps: &[Vec<usize>]) -> Option<Vec<Vec<usize>>> {
    let mut level: Vec<Option<usize>> = vec![None; deps.len()];
    let mut remaining = deps.len();
    let mut out: Vec<Vec<usize>> = Vec::new();
    while remaining > 0 {
        let ready: Vec<usize> = (0..deps.len())
            .filter(|&i| level[i].is_none() && deps[i].iter().all(|&d| level[d].is_some()))
            .collect();
        if ready.is_empty() {
            return None;
        }
        for &i in &ready {
            level[i] = Some(out.len());
        }
        remaining -= ready.len();
        out.push(ready);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_two_node_cycle_once_and_self_loop() {
        let deps = vec![vec![1], vec![0], vec![2], vec![]];
        let c = find_cycles(&deps);
        assert_eq!(c, vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn longer_cycle_is_spelled_in_dependency_order() {
        // 0 -> 1 -> 2 -> 0
        let deps = vec![vec![1], vec![2], vec![0]];
        assert_eq!(find_cycles(&deps), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn acyclic_graph_has_levels_and_dependents() {
        // 2 depends on 0 and 1; 3 on 2
        let deps = vec![vec![], vec![], vec![0, 1], vec![2]];
        assert!(find_cycles(&deps).is_empty());
        assert_eq!(levels(&deps).unwrap(), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(dependents(&deps), vec![vec![2], vec![2], vec![3], vec![]]);
        assert!(levels(&[vec![1], vec![0]]).is_none());
    }
}
