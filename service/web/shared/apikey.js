// The API key field of the service's pages. The key is kept for this browser tab only
// (sessionStorage) and sent as `Authorization: Bearer KEY` with the calls a page makes;
// the pages themselves are served without one.
"use strict";

const GensenKey = (() => {
  const STORE = "gensen-api-key";

  /** The key typed into a page of this tab, or "". */
  function get() {
    return sessionStorage.getItem(STORE) || "";
  }

  /** The headers that carry the key (none without a key). */
  function headers() {
    const key = get();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  /** Fill `form`'s input with the kept key; on submit keep the new one and call `changed`. */
  function bind(form, changed) {
    const input = form.querySelector("input");
    input.value = get();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) {
        sessionStorage.setItem(STORE, key);
      } else {
        sessionStorage.removeItem(STORE);
      }
      changed();
    });
  }

  return { get, headers, bind };
})();
