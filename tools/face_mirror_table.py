"""Print MediaPipe FaceMesh's mirror table (dualnet/face_mirror.py's MEDIAPIPE_FACE_MIRROR) from mediapipe's own mesh.

Run from the repository root when a mediapipe upgrade changes the mesh: `python -m tools.face_mirror_table`, then paste
the output over the constant; tests/test_face_mirror.py fails while the two differ.
"""

from __future__ import annotations

import textwrap

from mediapipe.python.solutions import face_mesh_connections as mesh

from dualnet.face_mirror import mesh_mirror


def main() -> None:
    mirror = mesh_mirror(mesh.FACEMESH_TESSELATION, mesh.FACEMESH_LEFT_EYE, mesh.FACEMESH_RIGHT_EYE)
    body = textwrap.fill(", ".join(map(str, mirror)) + ",", width=116, initial_indent="    ",
                         subsequent_indent="    ")
    print(f"MEDIAPIPE_FACE_MIRROR = (\n{body}\n)")


if __name__ == "__main__":
    main()
