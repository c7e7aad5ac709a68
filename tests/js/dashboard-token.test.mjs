// Unit tests of broadcaster/static/dashboard-token.js: the token from the page URL's fragment,
// removed from the address bar, kept in sessionStorage. tests/client/test_dashboard_browser.py
// checks the same in Chromium.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  TOKEN_KEY,
  storeToken,
  takeFragmentToken,
  takeToken,
} from "../../broadcaster/static/dashboard-token.js";

function page(hash, search = "") {
  const replaced = [];
  const location = { hash, pathname: "/", search };
  const history = { state: null, replaceState: (state, title, url) => replaced.push(url) };
  const items = new Map();
  const storage = {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, value),
    removeItem: (key) => items.delete(key),
  };
  return { location, history, storage, replaced, items };
}

test("a token in the fragment is taken, stored, and removed from the address bar", () => {
  const { location, history, storage, replaced, items } = page("#token=a.b.c", "?ws=x");
  assert.equal(takeToken(location, history, storage), "a.b.c");
  assert.deepEqual(replaced, ["/?ws=x"]);
  assert.equal(items.get(TOKEN_KEY), "a.b.c");
});

test("other fragment parameters stay", () => {
  const { location, history, storage, replaced } = page("#token=a.b.c&panel=overview");
  assert.equal(takeToken(location, history, storage), "a.b.c");
  assert.deepEqual(replaced, ["/#panel=overview"]);
});

test("without one in the fragment, the stored token; else null", () => {
  const { location, history, storage, replaced } = page("");
  assert.equal(takeToken(location, history, storage), null);
  storeToken(storage, "kept");
  assert.equal(takeToken(location, history, storage), "kept");
  assert.deepEqual(replaced, []);
  storeToken(storage, null);
  assert.equal(takeToken(location, history, storage), null);
});

test("an empty token in the fragment is removed and not stored", () => {
  const { location, history, storage, replaced, items } = page("#token=");
  assert.equal(takeToken(location, history, storage), null);
  assert.deepEqual(replaced, ["/"]);
  assert.equal(items.size, 0);
});

test("no storage (refused): the token still works for this page", () => {
  const { location, history } = page("#token=t");
  const refusing = {
    getItem: () => {
      throw new Error("denied");
    },
    setItem: () => {
      throw new Error("denied");
    },
    removeItem: () => {},
  };
  assert.equal(takeToken(location, history, refusing), "t");
  assert.equal(takeToken({ hash: "", pathname: "/", search: "" }, history, null), null);
});

test("takeFragmentToken ignores the stored token (a hashchange without a token)", () => {
  const { location, history, storage, replaced } = page("#panel=overview");
  storeToken(storage, "kept");
  assert.equal(takeFragmentToken(location, history, storage), null);
  assert.deepEqual(replaced, []);
  location.hash = "#token=newer";
  assert.equal(takeFragmentToken(location, history, storage), "newer");
  assert.equal(takeToken({ hash: "", pathname: "/", search: "" }, history, storage), "newer");
});
