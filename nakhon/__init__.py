"""nakhon, the app shell: configuration, the `nakhon` CLI, the composition root (nakhon/app.py), the demo."""

# The feed plugins register their specs in the core's registry (core.feeds), where the gateway and the rules
# read them: importing the app shell, whatever its entry point, registers them first.
import collectors.feeds  # noqa: F401
