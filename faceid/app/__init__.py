"""The face-ID app: actions (register / verify / identify / ...), the interactive menu, camera and video
sources, the quality gate and the liveness challenge."""
