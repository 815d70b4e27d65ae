"""Which face point each face point becomes under a horizontal flip (a face's left eye becomes its right eye).

A mirror table is a permutation `mirror` of a face layout's points: after flipping an image, the point that sits where
point i's mirror image is carries index `mirror[i]`. Points on the face's midline (nose tip, chin) map to themselves.
Tables are plain data so that `dualnet` imports without mediapipe; `mesh_mirror` derives the FaceMesh one.
"""

from __future__ import annotations

from collections.abc import Iterable


def _ibug68() -> tuple[int, ...]:
    """iBUG 300-W's 68 points (dlib, COCO-WholeBody's face, OpenPose's first 68), mirrored by their structure."""
    mirror = list(range(68))  # the nose bridge 27-30 and the middle point of each odd run below stay
    # runs that the flip reads backwards: jaw, both brows (17-21 then 22-26, each outer to inner), nostrils,
    # outer lip top and bottom, inner lip top and bottom
    for first, last in ((0, 16), (17, 26), (31, 35), (48, 54), (55, 59), (60, 64), (65, 67)):
        for k in range(last - first + 1):
            mirror[first + k] = last - k
    # eyes: 36-41 (right eye: outer corner, two top, inner corner, two bottom) against 42-47 (left eye: inner
    # corner, two top, outer corner, two bottom): corners and lids meet their counterparts
    for a, b in ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)):
        mirror[a], mirror[b] = b, a
    return tuple(mirror)


IBUG68_MIRROR = _ibug68()
# OpenPose's face output: iBUG 68, then the right pupil (68) and the left pupil (69) (its doc/02_output.md).
OPENPOSE_FACE70_MIRROR = IBUG68_MIRROR + (69, 68)

# MediaPipe FaceMesh's 468 points (no iris refinement): `mesh_mirror` over mediapipe 0.10.14's
# `face_mesh_connections`, seeded by FACEMESH_LEFT_EYE / FACEMESH_RIGHT_EYE (tools/face_mirror_table.py prints it;
# tests/test_face_mirror.py recomputes it and checks it against detections on a mirrored real video).
MEDIAPIPE_FACE_MIRROR = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 250, 251, 252, 253, 254, 255, 256,
    257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278,
    279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300,
    301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343,
    344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365,
    366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385,
    386, 387, 388, 389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197, 420, 199, 200, 421, 422,
    423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444,
    445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466,
    467, 3, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72,
    73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,
    123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
    145, 146, 147, 148, 149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193,
    194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219,
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247,
)


def _cycle(edges: Iterable[tuple[int, int]]) -> list[int]:
    """The vertices of a closed contour, in order along it."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(n) != 2 for n in neighbours.values()):
        raise ValueError("a seed contour must be one closed loop")
    order = [min(neighbours)]
    previous = None
    while True:
        here = order[-1]
        step = next(v for v in neighbours[here] if v != previous)
        if step == order[0]:
            break
        previous = here
        order.append(step)
    if len(order) != len(neighbours):
        raise ValueError("a seed contour must be one closed loop")
    return order


def _grow(adjacency: list[set[int]], seed: dict[int, int], budget: float) -> tuple[dict[int, int], int] | None:
    """Extend `seed` to an involution of the mesh's vertices, one pair at a time, always taking the pair whose mapped
    neighbourhoods agree best and, among those, whose image stands out most from the runner-up (a tie left to vertex
    numbers goes wrong more often); None once the disagreements (a mapped edge whose image is no edge) pass `budget`.
    """
    mirror: dict[int, int] = {}
    for v, t in seed.items():
        if mirror.get(v, t) != t or mirror.get(t, v) != v:
            return None
        mirror[v], mirror[t] = t, v

    def best_image(v: int) -> tuple[tuple[int, int, int], int, int, frozenset[int]] | None:
        """v's best image t: (score, margin over the runner-up, -t), t, its disagreements, the candidates seen."""
        known = [u for u in adjacency[v] if u in mirror]
        # v's image sits next to the images of v's mapped neighbours; v itself is a candidate (the midline)
        candidates = frozenset().union(*(adjacency[mirror[u]] for u in known)) - mirror.keys()
        scored = []
        for t in candidates:
            agree = sum(mirror[u] in adjacency[t] for u in known)
            # t's mapped neighbours whose images are not v's neighbours disagree too (t = v counts once)
            back = 0 if t == v else sum(mirror[w] not in adjacency[v] for w in adjacency[t] if w in mirror)
            disagree = len(known) - agree + back
            scored.append((agree - disagree, -t, disagree))
        if not scored:
            return None
        scored.sort(reverse=True)
        score, minus_t, disagree = scored[0]
        margin = score - scored[1][0] if len(scored) > 1 else len(adjacency)  # no rival: as sure as it gets
        return (score, margin, minus_t), -minus_t, disagree, candidates

    cache = {v: best_image(v) for v in range(len(adjacency)) if v not in mirror}
    cost = 0
    while cache:
        scored = [(entry[0], -v) for v, entry in cache.items() if entry is not None]
        if not scored:  # what is left touches nothing mapped: the seed does not reach the whole mesh
            return None
        v = -max(scored)[1]
        _, t, disagree, _ = cache[v]
        cost += disagree
        if cost > budget:
            return None
        mirror[v], mirror[t] = t, v
        del cache[v]
        cache.pop(t, None)  # t = v on the midline
        # a vertex's best image changes only if it neighbours v or t, or looked at a candidate that does
        touched = adjacency[v] | adjacency[t] | {v, t}
        for x, entry in cache.items():
            if x in touched or (entry is not None and not entry[3].isdisjoint(touched)):
                cache[x] = best_image(x)
    return mirror, cost


def mesh_mirror(edges: Iterable[tuple[int, int]], left: Iterable[tuple[int, int]],
                right: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """The left-right mirror of a triangulated face mesh, from its edges and two contours the mirror swaps.

    The mirror is the graph automorphism of the mesh that maps the `left` contour (e.g. FACEMESH_LEFT_EYE) onto the
    `right` one: it is grown from each of the contours' 2 x n alignments (n starting points, two directions), pair by
    pair where the mapped neighbourhoods agree best, and the alignment with the fewest edges mapped onto non-edges
    wins. Growing best-first, not by strict rules, is needed because a real mesh is not exactly symmetric: MediaPipe's
    FaceMesh splits three quads along the other diagonal on one side (6 of its 1,322 edges map onto non-edges).

    Args:
        edges: The mesh's edges as vertex pairs (either direction, repeats allowed); vertices are 0..max.
        left, right: Edges of two closed contours, one the mirror image of the other.

    Returns:
        mirror[i] = the vertex i becomes; an involution.

    Raises:
        ValueError: The contours are not closed loops of equal length, or no alignment (or more than one equally
            good alignment) gives a mirror.
    """
    edges = [tuple(e) for e in edges]
    adjacency: list[set[int]] = [set() for _ in range(1 + max(max(e) for e in edges))]
    for a, b in edges:
        if a != b:
            adjacency[a].add(b)
            adjacency[b].add(a)
    left_cycle, right_cycle = _cycle(left), _cycle(right)
    n = len(left_cycle)
    if n != len(right_cycle):
        raise ValueError(f"the seed contours differ in length ({n} and {len(right_cycle)} points)")
    results = []
    budget = float("inf")  # branch and bound: a candidate stops once it is worse than the best so far
    for direction in (1, -1):
        for start in range(n):
            seed = {left_cycle[k]: right_cycle[(start + direction * k) % n] for k in range(n)}
            grown = _grow(adjacency, seed, budget)
            if grown is not None:
                results.append((grown[1], grown[0]))
                budget = min(budget, grown[1])
    results.sort(key=lambda r: r[0])
    if not results or (len(results) > 1 and results[1][0] == results[0][0]):
        raise ValueError("the contours do not single out one mirror of the mesh")
    mirror = results[0][1]
    return tuple(mirror[v] for v in range(len(adjacency)))
