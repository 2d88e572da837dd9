"""An HTTP reward server for RL frameworks (OpenRLHF, verl, TRL): conservative rewards with uncertainty.

``bayesrm serve --model DIR --reward SPEC``; see docs/serve.md. The app is built by
:func:`bayesrm.serve.app.create_app`; :class:`~bayesrm.serve.batcher.DynamicBatcher` gathers
concurrent requests into batched forwards; :class:`~bayesrm.serve.state.ServeState` keeps the
reward's running state across restarts; :mod:`bayesrm.serve.template` splits rendered chat texts.
"""

from bayesrm.serve.config import ServeConfig

__all__ = ["ServeConfig"]
