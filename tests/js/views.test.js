// The pure parts of the page scripts, against the fixture tests/integration/test_frontend.py
// writes with attnscope's Python encoder (ATTNSCOPE_JS_FIXTURE): the same bytes must decode to
// the same numbers in the page as in Python.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const views = require(path.join(__dirname, "../../src/attnscope/render/assets/views.js"));
const report = require(path.join(__dirname, "../../src/attnscope/render/assets/report.js"));

const fixturePath = process.env.ATTNSCOPE_JS_FIXTURE;
const F = fixturePath ? JSON.parse(fs.readFileSync(fixturePath, "utf8")) : null;
const needsFixture = { skip: F ? false : "run through pytest (tests/integration/test_frontend.py)" };

function close(actual, expected, rel, what) {
  const tol = rel * Math.max(Math.abs(expected), 1e-30);
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} != ${expected}`);
}

// A views payload around one attention spec, as attnscope.render.views writes it.
async function part(entry) {
  const [L, H, T] = entry.spec.shape;
  const tokens = Array.from({ length: T }, (_, i) => `t${i}`);
  const P = { tokens: { self: tokens }, special: { self: tokens.map(() => 0) } };
  const spec = { name: "self", label: "Attention", rows: "self", cols: "self",
    causal: entry.causal, layers: [...Array(L).keys()], heads: [...Array(H).keys()],
    att: structuredClone(entry.spec) }; // loadPart lets go of the text it decodes
  const p = await views.loadPart(spec, P);
  await p.ensureAll();
  return p;
}

function eachWeight(decoded, fn) {
  decoded.forEach((layer, l) => layer.forEach((head, h) => head.forEach((row, i) =>
    row.forEach((value, j) => fn(l, h, i, j, value)))));
}

test("base85 text decodes to the bytes Python wrote", needsFixture, () => {
  for (const { bytes, text } of F.base85) {
    assert.deepEqual(Array.from(views.base85Bytes(text)), Array.from(Buffer.from(bytes, "base64")));
  }
});

test("float16 copies decode to numpy's float16 values, in both scripts", needsFixture, async () => {
  const decoded = await views.decodeArray({ ...F.float16.spec });
  assert.deepEqual(Array.from(decoded), F.float16.expected);
  assert.deepEqual(Array.from(report.float16(F.float16.spec.b64)), F.float16.expected);
});

for (const kind of ["dense", "sparse", "signed"]) {
  test(`${kind} attention decodes to Python's decode_attention`, needsFixture, async () => {
    const entry = F[kind];
    const p = await part(entry);
    const row = new Float32Array(p.Tk);
    eachWeight(entry.decoded, (l, h, i, j, expected) => {
      close(p.weight(l, h, i, j), expected, 1e-6, `${kind} weight ${[l, h, i, j]}`);
      if (j === 0) p.row(l, h, i, row);
      close(row[j], expected, 1e-6, `${kind} row ${[l, h, i, j]}`);
    });
    assert.equal(p.sparse, kind === "sparse");
  });
}

test("exact pages show the float16 copy, coded pages mark their values approximate",
  needsFixture, async () => {
    const exact = await part(F.exact);
    eachWeight(F.exact.float16, (l, h, i, j, expected) => {
      assert.equal(exact.weight(l, h, i, j), expected);
    });
    const v = exact.weight(0, 0, 0, 0);
    assert.equal(exact.show(v), views.fmt(v));
    const coded = await part(F.dense);
    const w = coded.weight(0, 0, 0, 0);
    assert.equal(coded.show(w), "\u2248" + views.fmt(w));
    assert.equal(coded.show(0), "0");
  });

test("pooling keeps each block's largest weight", needsFixture, async () => {
  const { layer, head, rows, cols, expected } = F.pooling;
  const p = await part(F.dense);
  const view = { i0: 0, i1: p.Tq, j0: 0, j1: p.Tk };
  const pooled = views.headBlocks(p, layer, head, rows, cols, view, null);
  expected.flat().forEach((value, x) => close(pooled[x], value, 1e-6, `pixel ${x}`));
  // a hovered row keeps only its own pixels row; the others are left out (NaN)
  const only = views.headBlocks(p, layer, head, rows, cols, view, 0);
  assert.ok(Number.isNaN(only[cols]) && !Number.isNaN(only[0]));
});

test("the colour ramp is the static figures' colour map", needsFixture, () => {
  const lut = views.makeRamp(F.ramp.stops);
  assert.deepEqual(views.RAMP_STOPS.light, F.ramp.stops);
  F.ramp.expected.forEach((rgb, v) => {
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(lut[v * 3 + c] - rgb[c]) <= 1, `level ${v}: ${lut[v * 3 + c]} vs ${rgb[c]}`);
    }
    const [r, g, b] = report.blues(v / 255).match(/\d+/g).map(Number);
    assert.ok(Math.abs(r - rgb[0]) <= 1 && Math.abs(g - rgb[1]) <= 1 && Math.abs(b - rgb[2]) <= 1);
  });
});

test("the contrast control maps weights as its formulas say", needsFixture, () => {
  const { values, tops } = F.scale;
  for (const mode of ["linear", "sqrt", "log"]) {
    tops.forEach((top, t) => {
      const scale = views.makeScale(mode, top);
      values.forEach((v, k) => close(scale(v), F.scale[mode][t][k], 1e-9, `${mode} ${v}/${top}`));
    });
  }
});

test("tooltips show three significant digits, the number Python's .3g gives", needsFixture, () => {
  for (const { value, shown } of F.digits) {
    assert.equal(Number(views.fmt(value)), Number(shown), `${value}`);
  }
});

test("tooltip numbers keep three digits, trailing zeros included", () => {
  assert.equal(views.fmt(0), "0");
  assert.equal(views.fmt(0.5), "0.500");
  assert.equal(views.fmt(0.012345), "0.0123");
  assert.equal(views.fmt(1e-5), "0.0000100");
  assert.equal(views.fmt(1), "1.00");
});

test("signed values go from blue through the background to red", () => {
  assert.deepEqual(views.divergingRgb(0, false), [255, 255, 255]);
  assert.deepEqual(views.divergingRgb(1, false), [178, 24, 43]);
  assert.deepEqual(views.divergingRgb(-1, false), [33, 102, 172]);
  assert.deepEqual(views.divergingRgb(-5, true), [33, 102, 172]); // clipped to [-1, 1]
  assert.equal(views.diverging(0), "rgb(255,255,255)");
});
