# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Try a trained MME-SID in the browser: build a purchase history by searching item titles (or pick a real test user),
see the top-k recommendations with their scores, and what drove each one: the parts of the fused score and the
item's fusion weights, which the frequency-aware gate sets from its training count (paper Eq. 8-9). Both heads where
the model has them: ranking, and constrained generation with its beams.

    bash recipes/run_pipeline.sh     # the main job: outputs/beauty-smollm2-135m/finetune/model (needed once)
    .venv/bin/python app.py          # then open http://127.0.0.1:7860
    python app.py --model outputs/<run>/finetune/model [--data outputs/<run>/data] [--port 7861]
    python app.py --model you/mmesid-beauty --data you/mmesid-beauty-data   # Hub repos (the dataset repo's items)
    python app.py --benchmark 50     # no UI: seconds per query over 50 random test users, then exit

Space layout: this file can be the app file of a Hugging Face Space (gradio SDK) whose requirements install this
package with its `demo` extra (`pip install ".[demo]"`, which adds gradio); a Space has no flags, so `MMESID_MODEL`
and `MMESID_DATA` (Hub repo ids there) stand for `--model` and `--data`, and gradio reads the Space's address and port.
The logic is `modeling_mmesid/demo.py` (tested without a browser, `tests/test_demo.py`); this file holds the UI, which
`tests/test_app.py` drives in headless Chromium.
"""

import argparse
import html
import os
import random
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # a checkout (or a Space) without `pip install -e .`

from modeling_mmesid.demo import (
    DEFAULT_MODEL,
    DemoRecommender,
    Generation,
    MissingRunError,
    Ranking,
    add_item,
    measure_latency,
)


# one colour per score of Eq. 8 (item table, then the modalities in the config's order)
COLORS = {"item table": "#6b7280", "collaborative": "#2563eb", "text": "#16a34a", "image": "#d97706"}
CSS = """
.mmesid table {border-collapse: collapse; width: 100%; font-size: 0.92em}
.mmesid th, .mmesid td {border-bottom: 1px solid #e5e7eb; padding: 4px 6px; text-align: left; vertical-align: top}
.mmesid td.num {text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap}
.mmesid tr.held-out {background: #fef9c3}
.mmesid .badge {background: #ca8a04; color: white; border-radius: 4px; padding: 0 4px; font-size: 0.8em}
.mmesid .bar {display: flex; height: 12px; width: 150px; border-radius: 3px; overflow: hidden}
.mmesid .note {color: #6b7280; font-size: 0.88em}
.mmesid .key {display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; border-radius: 2px}
"""


# ---------------------------------------------------------------------------------------------------- rendering


def _e(text) -> str:
    return html.escape(str(text))


def _short(title: str, limit: int = 90) -> str:
    """A title cut to `limit` characters (Amazon titles run to several hundred)."""
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def _title(title: str) -> str:
    """A title for a table cell: shortened, the whole of it on hover."""
    return f'<span title="{_e(title)}">{_e(_short(title))}</span>'

def _history_key(history: list[int]) -> str:
    """The history a result is for, as `data-history` (a reader of the page knows which query it shows)."""
    return ",".join(map(str, history))


def _legend(names: list[str]) -> str:
    return "".join(f'<span class="key" style="background:{COLORS.get(n, "#999")}"></span>{_e(n)}' for n in names)


def _bar(weights: dict[str, float]) -> str:
    cells = "".join(f'<div title="{_e(n)} {w:.2f}" style="width:{100 * w:.1f}%;background:{COLORS.get(n, "#999")}">'
                    "</div>" for n, w in weights.items())
    return f'<div class="bar">{cells}</div>'


def render_history(recommender: DemoRecommender, history: list[int], user: int | None, target: int | None) -> str:
    """The history, oldest first, as an ordered list (`data-item-id` on each row, for the browser test)."""
    if not history:
        head = "Empty history: add items by title, or pick a test user."
    elif user is not None:
        head = f"Test user {user}: {len(history)} items, oldest first."
    else:
        head = f"{len(history)} items, oldest first."
    rows = "".join(f'<li data-item-id="{i}">{_title(recommender.catalog.title(i))} <span class="note">#{i}</span></li>'
                   for i in history)
    held = ""
    if target is not None:
        held = (f'<p>Held-out item (the user\'s real next purchase): <b data-item-id="{target}">'
                f"{_title(recommender.catalog.title(target))}</b> <span class=\"note\">#{target}</span></p>")
    return f'<div class="mmesid" id="history-list"><p class="note">{_e(head)}</p><ol>{rows}</ol>{held}</div>'


def render_ranking(ranking: Ranking) -> str:
    """Top-k of the ranking head: rank, title, fused score, its parts `w x s` (summing to it), weights, count."""
    names = ranking.score_names
    head = "".join(f"<th>{_e(n)}<br><span class='note'>w × s</span></th>" for n in names)
    rows = []
    for item in ranking.items:
        parts = "".join(
            f'<td class="num" title="weight {item.weights[n]:.3f} × score {item.logits[n]:.3f}">{item.parts[n]:+.3f}'
            f'<br><span class="note">{item.weights[n]:.2f} × {item.logits[n]:.2f}</span></td>' for n in names
        )
        badge = ' <span class="badge">held-out</span>' if item.held_out else ""
        rows.append(
            f'<tr data-item-id="{item.item_id}" data-rank="{item.rank}" data-score="{item.score:.6f}"'
            f'{" class=held-out" if item.held_out else ""}><td class="num">{item.rank}</td>'
            f'<td>{_title(item.title)}{badge} <span class="note">#{item.item_id}</span></td>'
            f'<td class="num"><b>{item.score:.3f}</b></td>{parts}<td>{_bar(item.weights)}</td>'
            f'<td class="num">{item.train_count:,}</td></tr>'
        )
    if ranking.target is None:
        target = ""
    elif ranking.target_rank is None:
        target = "<p>The held-out item is in the history (masked).</p>"
    else:
        target = (f"<p>The held-out item ranks <b>{ranking.target_rank:,}</b> of {ranking.num_candidates:,} "
                  "candidates.</p>")
    return (
        f'<div class="mmesid" id="ranking" data-history="{_history_key(ranking.history)}"><p class="note">'
        f"Ranking head: the {len(ranking.items)} best of "
        f"{ranking.num_candidates:,} candidates (history items excluded) in {ranking.seconds:.2f} s. Fused score = "
        f"sum over the scores of weight × score; the weights come from the item's training count.{_legend(names)}</p>"
        f"{target}<table><tr><th>rank</th><th>item</th><th>fused score</th>{head}<th>fusion weights</th>"
        f"<th>training count</th></tr>{''.join(rows)}</table></div>"
    )


def render_note(element_id: str, text: str) -> str:
    """A line in place of a result (a head the model does not have)."""
    return f'<div class="mmesid" id="{element_id}"><p class="note">{_e(text)}</p></div>'


def render_generation(generation: Generation) -> str:
    """The beams of constrained generation, best first, with their log-probabilities."""
    rows = "".join(
        f'<tr data-item-id="{b.item_id}" data-rank="{b.rank}"{" class=held-out" if b.held_out else ""}>'
        f'<td class="num">{b.rank}</td><td>{_title(b.title)}'
        f'{" <span class=badge>held-out</span>" if b.held_out else ""} <span class="note">#{b.item_id}</span></td>'
        f'<td class="num">{b.log_prob:.3f}</td><td class="num">'
        f'{"" if b.ranking_rank is None else f"{b.ranking_rank:,}"}</td></tr>'
        for b in generation.beams
    )
    return (
        f'<div class="mmesid" id="generation" data-history="{_history_key(generation.history)}"><p class="note">'
        f"Generative head: {len(generation.beams)} beams of constrained beam search over the catalog's semantic IDs "
        f"(every beam an existing item, history excluded) in {generation.seconds:.2f} s.</p>"
        "<table><tr><th>beam</th><th>item</th><th>log-probability</th>"
        f"<th>rank by the ranking head</th></tr>{rows}</table></div>"
    )


def render_profile(recommender: DemoRecommender) -> str:
    """The gate over the catalog: the fusion weights at quantiles of the training count."""
    names = recommender.score_names
    rows = "".join(
        f'<tr><td class="num">{100 * r["quantile"]:g}%</td><td class="num">{r["train_count"]:,}</td>'
        + "".join(f'<td class="num">{r["weights"][n]:.3f}</td>' for n in names)
        + f"<td>{_bar(r['weights'])}</td></tr>"
        for r in recommender.fusion_profile()
    )
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    return (
        '<div class="mmesid" id="profile"><p class="note">The frequency-aware gate (paper Eq. 9): each item\'s '
        "weights are a function of its training count only. Here at quantiles of the catalog's counts."
        f"{_legend(names)}</p><table><tr><th>quantile</th><th>training count</th>{head}<th></th></tr>{rows}"
        "</table></div>"
    )


# ---------------------------------------------------------------------------------------------------- the UI


def build_app(recommender: DemoRecommender, k: int = 10):
    """The gradio Blocks of the app (imports gradio: `pip install -e ".[demo]"`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage statistics sent
    import gradio as gr

    catalog, config = recommender.catalog, recommender.config
    users = recommender.test_users

    def search(query, history):
        matches = catalog.search(query or "", limit=8, exclude=history)
        return gr.Radio(choices=[(f"{_short(title, 70)} (#{item})", item) for item, title in matches], value=None)

    def add(choice, query, history):
        if choice is None:
            raise gr.Error("Pick an item among the matches first.")
        history = add_item(history, choice, catalog.num_items)
        return history, None, render_history(recommender, history, None, None), search(query, history)

    def edit(history, how):
        history = history[:-1] if how == "last" else []
        return history, None, render_history(recommender, history, None, None)

    def show_user(user):
        if users is None:
            raise gr.Error("This data has no test split.")
        try:
            history, target = users.get(int(user))
        except (KeyError, TypeError, ValueError) as error:
            raise gr.Error(str(error).strip("'\"")) from None
        return history, target, render_history(recommender, history, int(user), target)

    def random_user():
        user = users.random_user()
        return (user, *show_user(user))

    def recommend(history, target, top_k):
        top_k = int(top_k)
        ranked = recommender.rank(history, k=top_k, target=target) if recommender.can_rank else None
        if ranked is not None:
            ranking = render_ranking(ranked)
        else:
            ranking = render_note("ranking", f"This model has no ranking head (head {config.head!r}).")
        if recommender.can_generate:
            explanation = ranked.explanation if ranked is not None else None
            generation = render_generation(recommender.generate(history, k=top_k, target=target,
                                                                explanation=explanation))
        else:
            generation = render_note("generation", f"This model has no generative head (head {config.head!r}); "
                                                   "recipes/finetune.py --head both trains one.")
        return ranking, generation

    source = recommender.source
    intro = (
        f"# MME-SID: see it recommend\n`{source.get('model', '')}` · {catalog.num_items:,} items · "
        f"modalities {', '.join(config.modalities)} · head `{config.head}`"
        + (f" · {len(users):,} test users" if users is not None else "")
        + "\n\nBuild a purchase history (oldest first) by searching titles, or show a real test user; then ask for "
        "recommendations. Items of the history are never recommended."
    )
    with gr.Blocks(title="MME-SID demo") as demo:
        history = gr.State([])  # item ids, oldest first
        target = gr.State(None)  # the held-out item of the test user shown, until the history is edited
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column(scale=2):
                query = gr.Textbox(label="Search item titles", placeholder="type a few letters of a title",
                                   elem_id="search")
                matches = gr.Radio(choices=[], label="Matches (most bought first)", elem_id="matches")
                add_button = gr.Button("Add to history", elem_id="add")
                history_view = gr.HTML(render_history(recommender, [], None, None), elem_id="history")
                with gr.Row():
                    remove_last = gr.Button("Remove last", size="sm", elem_id="remove-last")
                    clear = gr.Button("Clear", size="sm", elem_id="clear")
                top_k = gr.Slider(1, min(50, catalog.num_items), value=min(k, catalog.num_items), step=1,
                                  label="k", elem_id="k")
                go = gr.Button("Recommend", variant="primary", elem_id="recommend")
                if users is not None:
                    with gr.Row(equal_height=True):
                        user = gr.Number(users.random_user(random.Random(0)), label="Or show a test user",
                                         precision=0, elem_id="user", scale=1)
                        with gr.Column(scale=1, min_width=120):
                            show = gr.Button("Show test user", size="sm", elem_id="show-user")
                            pick = gr.Button("Random test user", size="sm", elem_id="random-user")
            with gr.Column(scale=5):
                ranking_view = gr.HTML(elem_id="ranking-view")
                generation_view = gr.HTML(elem_id="generation-view")
                with gr.Accordion("The fusion gate over the catalog", open=False, elem_id="gate"):
                    gr.HTML(render_profile(recommender) if recommender.can_rank else "")

        query.input(search, [query, history], matches, trigger_mode="always_last", show_progress="hidden")
        add_button.click(add, [matches, query, history], [history, target, history_view, matches])
        remove_last.click(lambda h: edit(h, "last"), history, [history, target, history_view])
        clear.click(lambda h: edit(h, "all"), history, [history, target, history_view])
        if users is not None:
            show.click(show_user, user, [history, target, history_view])
            pick.click(random_user, None, [user, history, target, history_view])
        go.click(recommend, [history, target, top_k], [ranking_view, generation_view])
    return demo


def theme():
    """The default look with the system's fonts: the default theme fetches Google Fonts, which offline only delays."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("MMESID_MODEL"),
                        help=f"model folder or Hub repo id (default: {DEFAULT_MODEL}, the main job's)")
    parser.add_argument("--data", default=os.environ.get("MMESID_DATA"),
                        help="the run's data/ folder, a run folder or a dataset repo id (default: the model's run)")
    parser.add_argument("--k", type=int, default=10, help="recommendations shown at first")
    parser.add_argument("--host", default=None, help="address to serve on (default 127.0.0.1; a Space sets 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    parser.add_argument("--benchmark", type=int, default=0, metavar="N",
                        help="no UI: time N queries (random test users) per head and print the seconds")
    args = parser.parse_args(argv)
    try:
        recommender = DemoRecommender.load(args.model, args.data)
    except MissingRunError as error:
        print(f"app.py: {error}", file=sys.stderr)
        return 2
    if args.benchmark:
        import torch

        for head, stats in measure_latency(recommender, args.benchmark, k=args.k).items():
            print(f"{head}: median {stats['median']:.3f} s, max {stats['max']:.3f} s per query ({stats['queries']} "
                  f"queries, k={args.k}, mean history {stats['mean_history_length']:.1f} items, "
                  f"{torch.get_num_threads()} threads)")
        return 0
    build_app(recommender, k=args.k).launch(server_name=args.host, server_port=args.port, theme=theme(), css=CSS,
                                            ssr_mode=False, footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
