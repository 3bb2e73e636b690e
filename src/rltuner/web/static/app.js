// The listening page: fetch the current pair, play A and B, send the answer, repeat.
"use strict";

let current = null;   // the item id of the pair on screen
let sending = false;  // one answer at a time: a double click or key repeat sends nothing twice

const $ = (id) => document.getElementById(id);

function show(state) {
  const link = new URL(state.link, window.location.href).href;
  $("rater-link").href = link;
  $("rater-link").textContent = link;
  $("progress-bar").max = state.total;
  $("progress-bar").value = state.answered;
  if (state.done) {
    current = null;
    $("progress-text").textContent = `All ${state.total} pairs rated`;
    $("pair").hidden = true;
    $("done").hidden = false;
    return;
  }
  current = state.item;
  $("progress-text").textContent = `Pair ${state.position} of ${state.total}`;
  for (const side of ["a", "b"]) {
    const audio = $(`audio-${side}`);
    audio.pause();
    audio.src = state[`audio_${side}`];
    audio.load();
  }
  $("pair").hidden = false;
  $("done").hidden = true;
}

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function call(url, options) {
  const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `the server answered ${response.status}`);
  }
  return body;
}

async function refresh() {
  try {
    show(await call("/api/next"));
  } catch (err) {
    fail(err.message);
  }
}

async function answer(prefer, strength) {
  if (sending || current === null) return;
  sending = true;
  $("error").hidden = true;
  try {
    show(await call("/api/rate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item: current, prefer: prefer, strength: strength }),
    }));
  } catch (err) {
    fail(`${err.message}. Reloading the pair.`);
    await refresh();
  } finally {
    sending = false;
  }
}

function play(side) {
  const audio = $(`audio-${side}`);
  const other = $(`audio-${side === "a" ? "b" : "a"}`);
  other.pause();
  if (audio.paused) {
    audio.currentTime = 0;
    audio.play().catch(() => {});
  } else {
    audio.pause();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll(".scale button")) {
    button.addEventListener("click", () =>
      answer(button.dataset.prefer, Number(button.dataset.strength)));
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const key = event.key.toLowerCase();
    if (key === "a" || key === "b") {
      play(key);
      event.preventDefault();
      return;
    }
    const button = document.querySelector(`.scale button[data-key="${key}"]`);
    if (button) {
      event.preventDefault();
      answer(button.dataset.prefer, Number(button.dataset.strength));
    }
  });
  refresh();
});
