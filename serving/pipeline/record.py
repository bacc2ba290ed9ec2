"""The `r2t2` record: what re-routing did for one request, as one typed structure (docs/record.md).

The re-router builds it (`build_record`); the serving side completes it with what only generation knows,
through the methods below (which answer was sent, whether it changed, what the engine ran, the timings);
`public()` is the one serialisation every reply uses. Fields a strategy does not fill stay absent rather than
null, so a record says only what its strategy did.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from r2t2.data.answers import same_answer
from serving.pipeline.answer_check import AnswerVerdict
from serving.pipeline.explain import explained
from serving.pipeline.query import Rerouted
from r2t2.routing.layout import RoutingLayout

LM_TOP_EXPERTS = 8  # an LM row in the record lists its this many heaviest experts
AnswerSource = Literal["speculative", "rerouted", "base"]  # which answer a reply carries


Routing = Annotated[dict[str, float] | dict[str, dict[str, float]], Field(
    description="the vision rows: weight per expert ({expert: weight}, summing to 1); a model with several vision "
                "rows gives {row: {expert: weight}} (rows and experts in /v1/models `routing_rows`); LM rows are "
                "in `lm_routing`")]


class ExpertWeight(BaseModel):
    expert: str
    weight: float


class RecordLmLayer(BaseModel):
    """One LM routing row: a decoder layer's routing at the answer position, before and after re-routing."""

    row: str = Field(description="the routing row's name (/v1/models `routing_rows`)")
    layer: int = Field(description="the language model's decoder layer")
    base: list[ExpertWeight] = Field(description="the router's own distribution at the last prompt token, its "
                                                 "heaviest experts first (at most 8)")
    routing: list[ExpertWeight] = Field(description="the re-routed distribution, heaviest first (at most 8)")
    engine_experts: list[str] | None = Field(description="the experts the engine actually ran at the answer "
                                             "position under the re-routed row (its top-k); null when the row was "
                                             "not applied")
    engine_tokens: int | None = Field(None, description="how many tokens (the last prompt token and the "
                                      "generated ones; the last prompt token alone, 1, with lm_positions first) "
                                      "the engine routed with that row")


class RecordLmStage(BaseModel):
    """Target both on a model with vision and LM rows: the LM rows' own stage, run after the vision rows moved."""

    model_config = ConfigDict(extra="allow")
    strategy: str = Field(description="the strategy that moved the LM rows (the request's `lm_strategy`, else its "
                                      "strategy)")
    moved: float = Field(description="share of an LM row's weight the stage moved, 0 to 1 (largest row)")
    fallback: str | None = Field(description="why the stage kept the LM rows where they were, or stopped early")
    guard: RecordGuard | None = Field(description="the evidence guard's verdict on the LM rows' move (null: off)")


class RecordLmRouting(BaseModel):
    """The language model's routing rows (models with LM routing layers only)."""

    applied: bool = Field(description="true: the answer was generated with the re-routed LM rows applied inside "
                                      "the engine; false: every layer kept its own router (target vision, or the "
                                      "LM rows did not move)")
    layers: list[RecordLmLayer]
    stage: RecordLmStage | None = Field(None, description="target both: the LM rows' stage, run from the routing the "
                                        "vision rows' stage left; its guard says why the LM rows were left alone")


class RecordNeighbour(BaseModel):
    """A reference sample that steered the routing."""

    id: str = Field(description="the reference sample's id in the index")
    question: str | None = Field(None, description="its question")
    answer: str | None = Field(None, description="its answer, which the model got right with its own routing")
    task: str | None = Field(None, description="its task (e.g. shape, color, count)")
    similarity: float | None = Field(None, description="cosine similarity of its question to the request's; null "
                                     "for neighbours found in routing space, not by question")
    weight: float = Field(description="its share of the pull, 0 to 1 (kernel weight; the weights sum to 1)")
    distance: float = Field(description="Euclidean distance to the request in `neighbour_space`")


class NeighbourQuestion(BaseModel):
    """The neighbours that share one question (and task), once: copies of a question asked of several images."""

    question: str | None = Field(description="the question they share")
    task: str | None = Field(description="its task")
    count: int = Field(description="how many of the neighbours ask it")
    weight: float = Field(description="their summed share of the pull, 0 to 1")
    similarity: float | None = Field(description="its question's cosine similarity to the request's (the same for "
                                                 "every copy); null in routing space")
    distance: float = Field(description="the first copy's distance in `neighbour_space`")
    answers: dict[str, int] = Field(description="each answer of these neighbours with how many give it")


class LineSearchPoint(BaseModel):
    """One evaluation of a line search between the router's routing and the neighbours'."""

    toward_neighbours: float = Field(description="0: the router's own routing, 1: the neighbours'")
    neighbour_loss: float = Field(description="the neighbours' weighted answer loss at that mix")


class RecordIndex(BaseModel):
    name: str = Field(description="the reference index searched")
    version: int = Field(description="its version that answered (a rebuild swaps versions between requests)")


class RecordGuard(BaseModel):
    """The evidence guard's verdict (request option r2t2.guard; strategies steered by question-space neighbours)
    and the answer check's."""

    fired: bool = Field(description="true: the guard kept the router's routing instead of the strategy's")
    reason: Literal["neighbours_disagree", "neighbours_agree_with_router", "base_fits_neighbours",
                    "no_loss_gain"] | None = Field(
        description="the first check that failed: the neighbours' routings are spread out; their weighted routing "
                    "is within guard_min_shift of the router's; the neighbours are already answered well under the "
                    "router's routing; the move does not lower their loss")
    neighbour_spread: float | None = Field(description="how much the neighbours' own routings disagree, 0 to 1 "
                                                       "(null: the routing guard did not run)")
    neighbour_loss_base: float | None = Field(description="the neighbours' weighted loss under the router's routing")
    neighbour_loss_moved: float | None = Field(description="the same under the strategy's routing")
    decided_before_steps: bool = Field(False, description="true: decided from the neighbours' routings or their "
                                       "loss under the router's routing, before the strategy's steps, which were "
                                       "not run (the guard keeps the router's routing whatever they reach)")
    answer: AnswerVerdict | None = Field(None, description="the answer check's verdict, when the routing "
                                               "moved and the check is on")

    @classmethod
    def answer_check_only(cls, verdict: AnswerVerdict) -> RecordGuard:
        """The verdict when only the answer check ran (the evidence guard was off or does not apply)."""
        return cls(fired=False, reason=None, neighbour_spread=None, neighbour_loss_base=None,
                   neighbour_loss_moved=None, answer=verdict)


class RecordReplica(BaseModel):
    """The re-router replica that re-routed the request."""

    replica: str = Field(description="its Serve replica id (GET /placement lists every replica and its node)")
    node: str = Field(description="the name of the Ray node it runs on (its IP address when the node has no name)")


class RecordTimings(BaseModel):
    """Seconds spent in each stage of this request."""

    model_config = ConfigDict(extra="allow")
    encode: float | None = Field(None, description="image experts, router and question embedding")
    embed: float | None = Field(None, description="a separate neighbour-search embedding (0 when the model's own "
                                                  "is reused)")
    search: float | None = Field(None, description="the reference-index search (question-space neighbours only)")
    reroute: float | None = Field(None, description="the strategy itself")
    generate: float | None = Field(None, description="the language model's answer (absent on an error)")
    total: float | None = Field(None, description="the whole request as the server saw it")


class R2T2Record(BaseModel):
    """What re-routing did for this request (the `r2t2` object of a reply; docs/record.md explains each field).

    Fields of one strategy's own work (`steps_taken`, `neighbour_loss`, `answer_space_mass`, `distance_moved`,
    `toward_neighbours`, `line_search`, `kernel_bandwidth`) appear only in that strategy's records.
    """

    model_config = ConfigDict(extra="allow")
    strategy: str = Field(description="the strategy that ran (the request's or the model's default; none for a "
                                      "question asked without an image)")
    base_routing: Routing = Field(description="the router's own routing for this request")
    routing: Routing = Field(description="the routing the answer was generated with")
    moved: float = Field(description="share of routing weight that moved to other experts, 0 to 1 (half the L1 "
                                     "distance, largest routing row): 0 = stayed, 1 = all moved")
    fallback: str | None = Field(description="why re-routing kept the router's routing or stopped early (e.g. "
                                             "'empty neighbourhood', or 'no image: re-routing needs one' for a "
                                             "question asked without an image); null when it ran to completion")
    neighbour_space: Literal["question", "routing"] | None = Field(
        description="question: neighbours are reference questions near the request's; routing: reference "
                    "routings near the current routing; null: none used")
    neighbours: list[RecordNeighbour] = Field(description="nearest first; empty when the strategy uses none")
    neighbour_questions: list[NeighbourQuestion] = Field(description="the neighbours grouped by question, in the "
                                                         "order of `neighbours`: copies of one question appear once "
                                                         "with their count and answers")
    explanation: str = Field(description="one sentence: why the routing moved as it did, or did not (the "
                                         "strategy, a fallback, the guard's reason, the loss or line search, the "
                                         "experts that gained and lost weight)")
    guard: RecordGuard | None = Field(None, description="the evidence guard's verdict and the answer check's; null "
                                                        "when neither ran")
    answer_source: AnswerSource | None = Field(
        None, description="which answer was sent: speculative (started under the router's routing while "
                          "re-routing ran, and sent because the routing did not move), rerouted (generated under the "
                          "re-routed routing), base (the answer check sent the router's answer instead)")
    kernel_bandwidth: float | None = Field(None, description="the kernel bandwidth used (median of the "
                                           "neighbour distances unless configured); strategies with neighbours")
    steps_taken: int | None = Field(None, description="descent steps or updates actually taken (iterative strategies)")
    neighbour_loss: list[float] | None = Field(None, description="a descent: the neighbours' weighted answer loss "
                                               "before each step and after the last (steps_taken + 1 values; a descent "
                                               "that started at a vertex has the router's routing's loss first)")
    answer_space_mass: list[float] | None = Field(None, description="answer-space descent: the share of the answer "
                                                  "on the neighbours' answers under the router's routing, then at "
                                                  "the start and after each step")
    distance_moved: list[float] | None = Field(None, description="mode finding: how far each update moved the "
                                               "routing (it stops once an update moves less than 1e-4)")
    toward_neighbours: float | None = Field(None, description="a line search: where the routing the answer used lies between "
                                            "the router's (0) and the neighbours' weighted routing (1); 0 when the "
                                            "guard kept the router's routing, so `moved` is 0 exactly when this is 0 "
                                            "or the two routings are equal")
    line_search: list[LineSearchPoint] | None = Field(None, description="every mix the line search tried")
    lm_routing: RecordLmRouting | None = Field(None, description="the LM rows before and after and what the engine "
                                               "ran; null for a model without LM routing rows")
    index: RecordIndex | None = Field(description="the reference index used; null for strategies that use none")
    changed_answer: bool | None = Field(description="whether re-routing changed the answer: false when the routing "
                                        "did not move; true/false with r2t2.compare_with_none; else null (unknown)")
    answer_without_rerouting: str | None = Field(None, description="with r2t2.compare_with_none: the answer "
                                                 "under the router's own routing, with the same sampling")
    batch_size: int | None = Field(None, description="how many requests the re-router re-routed together with "
                                                     "this one, itself included (1: alone)")
    rerouted_by: RecordReplica | None = Field(None, description="the re-router replica that re-routed this request "
                                                                "and its node")
    timings: RecordTimings = Field(description="seconds per stage")
    verify_until: str | None = Field(None, description="until when (ISO 8601, UTC) this completion can be verified by "
                                     "its id: POST /v1/references with {\"completion_id\": <the reply's id>, "
                                     "\"answer\": <the right answer>}; absent when the server takes no verified "
                                     "answers or the question came without an image")

    def public(self) -> dict[str, Any]:
        """The record as every reply carries it: the fields that were set, in JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)

    def sent(self, source: AnswerSource) -> None:
        """Which answer the reply carries."""
        self.answer_source = source

    def checked(self, verdict: AnswerVerdict) -> None:
        """The answer check's verdict on the first choice decides whether the answer changed and, when it sent
        the router's answer, the answer's source."""
        if self.guard is None:
            self.guard = RecordGuard.answer_check_only(verdict)
        else:
            self.guard.answer = verdict
        self.changed_answer = verdict.sent == "rerouted" and verdict.reason != "unchanged"
        if verdict.sent == "base":
            self.answer_source = "base"

    def compared_with_none(self, sent: str) -> None:
        """With `compare_with_none`: the answer sent against the one under the router's routing (the sent one
        itself when the routing did not move, so no second answer was generated)."""
        if "answer_without_rerouting" not in self.model_fields_set:
            self.answer_without_rerouting = sent
        # Compared as the answer check and accuracy compare answers: "Red" and "red" are one answer.
        self.changed_answer = not same_answer(sent, self.answer_without_rerouting or "")

    def engine_ran(self, report: dict[int, dict[str, Any]] | None, experts: dict[str, tuple[str, ...]]) -> None:
        """Name, in the LM rows, the experts the engine ran under them (its report by decoder layer; `experts`:
        each routing row's expert names)."""
        if report is None or self.lm_routing is None:
            return
        for layer in self.lm_routing.layers:
            ran = report.get(layer.layer)
            if ran is not None:
                layer.engine_experts = [experts[layer.row][expert] for expert in ran["experts"]]
                layer.engine_tokens = ran["tokens"]

    def finished(self, generate_seconds: float, total_seconds: float) -> None:
        self.timings.generate = generate_seconds
        self.timings.total = total_seconds



NO_IMAGE = "no image: re-routing needs one"  # the fallback of a question asked without an image


def question_only_record(encode_seconds: float) -> R2T2Record:
    """The record of a question asked without an image: strategy `none` with the reason as its fallback, since
    re-routing takes its neighbours and the experts' routing from the image; the LM answered the question alone,
    so that answer is the one without re-routing."""
    return R2T2Record(strategy="none", base_routing={}, routing={}, moved=0.0, fallback=NO_IMAGE,
                      neighbour_space=None, neighbours=[], neighbour_questions=[],
                      explanation="No image: the language model answered the question alone, without visual "
                                  "tokens, and nothing was re-routed (re-routing needs an image: its neighbours "
                                  "and the experts' routing come from it).",
                      lm_routing=None, index=None, changed_answer=False,
                      timings=RecordTimings(encode=encode_seconds))


def build_record(done: Rerouted, layout: RoutingLayout) -> R2T2Record:
    """The record of a re-routed request, as the re-router sends it (the serving side completes it)."""
    result = done.result.to_dict()
    vision = [(i, row) for i, row in enumerate(layout.rows) if row.kind == "vision"]

    def named(rows: list[list[float]]) -> dict[str, Any]:
        """{expert: weight} for one vision row; {row: {expert: weight}} for several."""
        per_row = {row.name: dict(zip(row.experts, rows[i])) for i, row in vision}
        return next(iter(per_row.values())) if len(per_row) == 1 else per_row

    result["lm_routing"] = _lm_rows(result["base_routing"], result["routing"], done, layout)
    stage = result.pop("lm_stage", None)
    if stage is not None and result["lm_routing"] is not None:
        result["lm_routing"]["stage"] = stage
    result["base_routing"] = named(result["base_routing"])
    result["routing"] = named(result["routing"])
    # Every neighbour is named by its reference sample (id, question, answer, task) before its numbers.
    result["neighbours"] = [{"id": n["id"], **_public(done.neighbours.get(n["id"], {})), "weight": n["weight"],
                             "distance": n["distance"]} for n in result["neighbours"]]
    result["index"] = None if done.index is None else {"name": done.index.name, "version": done.index.version}
    # Known without a comparison only when the routing did not move: the prompt, hence the answer, is the
    # router's own. The answer check or `compare_with_none` settles it otherwise.
    result["changed_answer"] = False if result["moved"] == 0 else None
    result["timings"] = done.timings
    result["batch_size"] = done.batch_size
    result.update(explained(result))  # why it moved, or not
    return R2T2Record.model_validate(result)


def _lm_rows(base: list[list[float]], routing: list[list[float]], done: Rerouted,
             layout: RoutingLayout) -> dict[str, Any] | None:
    """The LM rows before and after (each layer's heaviest experts), and whether the answer applies them.

    None for a model without LM rows. What the engine ran is added once it has answered (`engine_ran`).
    """
    rows = [(i, row) for i, row in enumerate(layout.rows) if row.kind == "lm"]
    if not rows:
        return None

    def heaviest(weights: list[float], experts: tuple[str, ...]) -> list[dict[str, Any]]:
        ranked = sorted(zip(experts, weights), key=lambda pair: -pair[1])[:LM_TOP_EXPERTS]
        return [{"expert": expert, "weight": weight} for expert, weight in ranked]

    return {"applied": done.pinned is not None, "layers": [
        {"row": row.name, "layer": row.layer, "base": heaviest(base[i], row.experts),
         "routing": heaviest(routing[i], row.experts), "engine_experts": None} for i, row in rows]}


def _public(described: dict[str, Any]) -> dict[str, Any]:
    """A neighbour's description as the record shows it (its index row is internal)."""
    return {key: value for key, value in described.items() if key != "row"}
