"""demo: a browser demo of a stage-2 checkpoint (Gradio; `pip install "vimtool[demo]"`)."""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import Device


def demo_cmd(
    checkpoint: Annotated[
        str,
        typer.Argument(metavar="CKPT", help="Stage-2 checkpoint (VIM or Parti): folder, run folder or Hub repo id."),
    ],
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of a repo id.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Image tokenizer folder, only if the checkpoint does not carry its own.")
    ] = None,
    device: Device = None,
    host: Annotated[str, typer.Option(help="Address to serve on (0.0.0.0 = every interface).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: Gradio's, 7860 or the next free one).")] = None,
    share: Annotated[bool, typer.Option("--share", help="Also serve through a public gradio.live link.")] = False,
) -> None:
    """Serve a web page that generates with a checkpoint: prompt (Parti) or class (VIM), guidance, temperature,
    top-k, seed, rerank count, and a gallery of the images. Runs until interrupted.

    \b
    Example:
      vimtool demo runs/parti_shapes/final --port 7860
    """
    import vimtool  # deferred: torch, the models and gradio load only when the demo starts
    from vimtool.demo import build_demo

    pipe = vimtool.load(checkpoint, revision=revision, tokenizer=tokenizer, device=device or "auto")
    build_demo(pipe).launch(server_name=host, server_port=port, share=share)
