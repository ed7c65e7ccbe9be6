// The data each attnscope page receives, written once for views.js, report.js and app.js.
// These are types only (for `tsc --checkJs`): pages never load this file. Each shape is what
// the Python side writes: attnscope.render.html (encode_attention, encode_signed,
// encode_float16), attnscope.render.views (the views payload), attnscope.analysis.report (the
// report's charts) and attnscope.app (the explorer's configuration).

/** Text of deflated bytes in attnscope's base85 alphabet, one string per layer. */
type Base85Planes = Array<string | null>;

/** Any float array as little-endian float16 (or raw bytes) in base64: encode_float16. */
interface ArraySpec {
  shape: number[];
  dtype: "f16" | "u8";
  zlib: boolean;
  /** one string, or one per first-axis slice (each deflated on its own when zlib is set) */
  b64: string | string[] | null;
}

/** Attention [L, H, Tq, Tk] as one-byte logarithmic codes: encode_attention/encode_signed. */
interface AttentionSpec {
  shape: [number, number, number, number];
  /** "log8": every weight coded; "log8-sparse": each row keeps about its largest weights */
  dtype: "log8" | "log8-sparse";
  zlib: true;
  /** the code step on the natural-log scale (a weight's ratio to its row's maximum) */
  step: number;
  /** the code of a row's maximum */
  top: number;
  codes: Base85Planes;
  /** float32 [L, H, Tq], deflated, base85: what code `top` stands for in each row */
  rowmax: string | null;
  /** float32 [L, H, Tq], deflated, base85: the mean of each row's weights below the floor */
  tail: string | null;
  /** float16 copies of every weight, per layer (short pages, or exact=True) */
  exact?: Base85Planes | null;
  /** signed values: one bit a value, 1 for negative, packed and deflated per layer */
  sign?: Base85Planes | null;
  signed?: boolean;
  /** sparse only: kept weights per row (uint16), their key gaps (uint16), and each row's
   * threshold (float32 [L, H, Tq], base64) */
  counts?: Base85Planes | null;
  index?: Base85Planes | null;
  threshold?: string | null;
  keep?: number;
  causal?: boolean;
}

/** One attention part of a view: self (encoder), decoder or cross attention. */
interface PartSpec {
  name: "self" | "decoder" | "cross";
  label: string;
  /** which token list the rows and columns use */
  rows: "self" | "decoder";
  cols: "self" | "decoder";
  causal: boolean;
  /** the layer and head numbers shown (a view may keep only some) */
  layers: number[];
  heads: number[];
  att: AttentionSpec;
}

/** What the head, model and neuron views and the tokens table receive (AttnView.payload). */
interface ViewsPayload {
  title: string;
  subtitle: string;
  kinds: Array<"head" | "model" | "neuron" | "tokens">;
  theme: "light" | "dark";
  /** one colour a head, "#rrggbb" */
  colors: string[];
  /** the weight ramp's stops, [light, dark], each [[r, g, b], ...] */
  ramp: number[][][];
  sentence_b_start: number | null;
  tokens: { self: string[]; decoder?: string[] };
  /** 1 for special tokens ([CLS], [SEP], BOS...), per token list */
  special: { self: number[]; decoder?: number[] };
  parts: PartSpec[];
  initial: {
    part: string;
    layer: number;
    heads: number[] | null;
    head: number;
    query: number | null;
  };
  /** queries and keys [L, H, T, d_head] for the neuron view, or null (then qk_missing says why) */
  qk: { q: ArraySpec; k: ArraySpec; scales: number[]; scale_texts: string[] } | null;
  qk_missing: string;
  /** [position, token, sentence, special] per token */
  token_table: Array<[number, string, string, boolean]>;
}

/** One chart of a report page (attnscope.analysis.report): the kinds report.js draws. */
interface ChartSpec {
  kind: string;
  title?: string;
  [field: string]: unknown;
}

/** A report page's data: the list of its charts, in the order their figures appear. */
type ReportPayload = ChartSpec[];

/** The explorer's configuration, in the page's "explorer-config" element: the body of
 * GET /api/models (attnscope.app.schemas.ModelsResponse). */
interface ExplorerConfig {
  models: Array<{ name: string; model_type: string; architecture: string; layers: number;
    heads: number; max_tokens: number | null;
    /** whether the model can generate (the Generate tab, POST /api/generate) */
    generative: boolean }>;
  default: string;
  limits: { max_chars: number; max_tokens: number; timeout_s: number; runs: number;
    queue: number; flow_budget_s: number; cache: number; cache_mb: number };
  corpus: {
    store: string;
    default_run: string;
    runs: Array<{ run_id: string; model: string; source: string; [field: string]: unknown }>;
    score_names: string[];
    stats: string[];
    example_kinds: string[];
  } | null;
}

/** views.js's entry point, which the explorer calls on each view it mounts. */
declare function attnscopeMount(root: HTMLElement): any;

/** The explorer's handle on its state, for tests and tools (document.body.explorer). */
interface HTMLElement {
  explorer?: { state: Record<string, unknown>; timings: Record<string, number> };
}

/** report.js's attnscopeCharts as the explorer inlines it: `const exCharts = (function(){
 * ...; return attnscopeCharts; })()`. */
declare const exCharts: (container: ParentNode, data: ReportPayload) => void;
