"""A browser demo of a stage-2 checkpoint (`vimtool demo CKPT`): settings on the left, a gallery on the right.

    from vimtool.demo import build_demo
    build_demo(vimtool.load("runs/parti/final")).launch()

Parti: a prompt box and the rerank count (candidates per prompt, the best `images` kept); VIM: a class picker
("unconditional" for an unconditional model or the null class). Both: guidance, temperature, top-k, seed and the
number of images. Generation goes through `vimtool.api.Pipeline.generate`, so a seed and settings give the images
`vimtool sample` writes. Gradio is an optional dependency (`pip install "vimtool[demo]"`).
"""

from __future__ import annotations

import os
from typing import Any

from vimtool.api import Pipeline
from vimtool.errors import VimtoolError
from vimtool.sampling import DEFAULT_TEMPERATURE

UNCONDITIONAL = "unconditional"
ELEM_IDS = {"prompt": "vimtool-prompt", "generate": "vimtool-generate", "gallery": "vimtool-gallery"}  # for tests


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a demo makes no calls home
    try:
        import gradio as gr
    except ImportError:
        raise VimtoolError('the demo needs gradio: pip install "vimtool[demo]"') from None
    return gr


def class_choices(pipe: Pipeline) -> list[str]:
    """What the VIM class picker offers: the class ids, and "unconditional" (the null class / an unconditional model)."""
    return [*(str(k) for k in range(pipe.model.config.num_classes)), UNCONDITIONAL]


def build_demo(pipe: Pipeline, title: str | None = None) -> Any:
    """A `gradio.Blocks` app generating with `pipe` (launch it with `.launch()`)."""
    gr = _gradio()
    parti = pipe.family == "parti"
    default_guidance = pipe.stage2.default_guidance_scale

    def generate(condition, n, guidance, temperature, top_k, seed, rerank):
        n = int(n)
        if parti:
            cond, extra = str(condition), {"rerank": max(n, int(rerank))}
        else:
            cond, extra = (None if condition in (None, UNCONDITIONAL) else int(condition)), {}
        images = pipe.generate(cond, n=n, guidance=float(guidance), seed=int(seed), temperature=float(temperature),
                               top_k=int(top_k), **extra)  # fmt: skip
        return [(im, f"#{k}") for k, im in enumerate(images)]

    with gr.Blocks(title=title or f"vimtool: {pipe.stage2.name}") as demo:
        gr.Markdown(f"## {title or 'vimtool'}\n`{pipe.stage2.name}`: {'Parti text-to-image' if parti else 'VIM'}")
        with gr.Row():
            with gr.Column(scale=1):
                if parti:
                    condition = gr.Textbox(label="Prompt", value="a red circle top left", elem_id=ELEM_IDS["prompt"])
                else:
                    choices = class_choices(pipe)
                    condition = gr.Dropdown(choices, value=choices[0], label="Class", elem_id=ELEM_IDS["prompt"])
                n = gr.Slider(1, 16, value=4, step=1, label="Images")
                guidance = gr.Slider(1.0, 10.0, value=default_guidance, step=0.1, label="Guidance scale")
                temperature = gr.Slider(0.0, 2.0, value=DEFAULT_TEMPERATURE[pipe.family], step=0.05,
                                        label="Temperature (0 = greedy)")  # fmt: skip
                top_k = gr.Number(value=0, precision=0, minimum=0, label="Top-k (0 = off)")
                seed = gr.Number(value=0, precision=0, label="Seed")
                rerank = gr.Number(
                    value=8, precision=0, minimum=1, label="Rerank: candidates per prompt", visible=parti
                )
                button = gr.Button("Generate", variant="primary", elem_id=ELEM_IDS["generate"])
            with gr.Column(scale=2):
                # png: the pixels generated, not a lossy webp copy
                gallery = gr.Gallery(label="Samples", columns=4, format="png", elem_id=ELEM_IDS["gallery"])
        inputs = [condition, n, guidance, temperature, top_k, seed, rerank]
        button.click(generate, inputs=inputs, outputs=gallery)
        if parti:
            condition.submit(generate, inputs=inputs, outputs=gallery)
    return demo


__all__ = ["ELEM_IDS", "UNCONDITIONAL", "build_demo", "class_choices"]
