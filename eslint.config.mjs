// eslint over attnscope's page scripts and their Node tests (flat config).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    // the page scripts: inlined into pages as classic scripts, inside one function each
    files: ["src/attnscope/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: {
        ...globals.browser,
        module: "readonly", // read only to expose the pure parts to the Node tests
      },
    },
    rules: {
      "no-unused-vars": ["error", { args: "none", varsIgnorePattern: "^attnscope" }],
    },
  },
  {
    // the explorer's script runs after views.js and report.js, inside the same function
    files: ["src/attnscope/app/assets/app.js"],
    languageOptions: { globals: { attnscopeMount: "readonly", exCharts: "readonly" } },
  },
  {
    // the Generate tab's script runs after app.js, inside the same function, and uses its helpers
    files: ["src/attnscope/app/assets/generate.js"],
    languageOptions: {
      globals: Object.fromEntries(["attnscopeMount", "ExApiError", "ex$", "exApi", "exConfig",
        "exCorpus", "exEl", "exMount", "exRun", "exShowTab"].map((name) => [name, "readonly"])),
    },
  },
  {
    files: ["tests/js/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "commonjs", globals: globals.node },
  },
];
