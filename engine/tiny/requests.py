"""Requests of every shape for the tiny models' tests and benchmarks: several languages, with and
without files, generated from a seed.

The tiny planner is random, so what matters is the variety of what it is asked: how many files
and of which kinds, where their ``###path###`` markers stand, and the words around them, in the
languages the rules planner reads. Pure Python (no torch): the phrases are data.
"""

from __future__ import annotations

import random

#: Per language: phrases with ``{s}`` for a subject, and subjects.
PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("Draw {s}.", "Make a video of {s}.", "Replace the sky with {s}", "Animate this: {s}",
         "What is in this picture?", "Put {s} together", "Widen it to 16:9, {s}", "Keep it going: {s}"),
        ("a red fox in the snow", "two cats on a sofa", "a lighthouse at night", "waves on a beach"),
    ),
    "es": (
        ("Dibuja {s}.", "Haz un vídeo de {s}.", "Cambia el fondo por {s}", "¿Qué hay en la imagen?",
         "Anima esta foto: {s}", "Amplía la imagen hacia los lados, {s}"),
        ("un zorro rojo en la nieve", "dos gatos en un sofá", "un faro de noche"),
    ),
    "fr": (
        ("Dessine {s}.", "Fais une vidéo de {s}.", "Remplace le ciel par {s}", "Anime cette photo : {s}",
         "Qu'est-ce qu'il y a sur l'image ?", "Dézoome, {s}"),
        ("un renard roux dans la neige", "deux chats sur un canapé", "un phare la nuit"),
    ),
    "de": (
        ("Zeichne {s}.", "Mach ein Video von {s}.", "Ersetze den Himmel durch {s}", "Was ist auf dem Bild?",
         "Animiere das Foto: {s}", "Verlängere das Video um 3 Sekunden, {s}"),
        ("einen roten Fuchs im Schnee", "zwei Katzen auf einem Sofa", "einen Leuchtturm bei Nacht"),
    ),
    "pt": (
        ("Desenhe {s}.", "Faça um vídeo de {s}.", "O que há nesta imagem?", "Anime esta foto: {s}"),
        ("uma raposa vermelha na neve", "dois gatos num sofá"),
    ),
    "it": (
        ("Disegna {s}.", "Fai un video di {s}.", "Cosa c'è nell'immagine?", "Anima questa foto: {s}"),
        ("una volpe rossa nella neve", "due gatti su un divano"),
    ),
    "zh": (
        ("画一只{s}", "生成一个{s}的视频", "把天空换成{s}", "这张图片里有什么？", "让这张照片动起来：{s}"),
        ("雪地里的红狐狸", "沙发上的两只猫", "夜晚的灯塔"),
    ),
    "ja": (
        ("{s}を描いて", "{s}の動画を作って", "この画像に何がありますか？", "この写真を動かして：{s}"),
        ("雪の中の赤いキツネ", "ソファの上の二匹の猫"),
    ),
}  # fmt: skip

_IMAGES = ("photo.png", "mask.png", "face.jpg", "start.png", "end.png", "pose.png", "cat.webp")
_VIDEOS = ("clip.mp4", "surf.mov", "dance.webm")


def generated_requests(n: int, seed: int = 0) -> list[str]:
    """``n`` requests, the same for the same seed: languages in turn, 0 to 4 files (images, videos
    or both) whose markers stand before, inside or after the words, a few with files and no words."""
    rng = random.Random(seed)
    languages = list(PHRASES)
    out = []
    for i in range(n):
        phrases, subjects = PHRASES[languages[i % len(languages)]]
        words = rng.choice(phrases).format(s=rng.choice(subjects))
        count = rng.choice((0, 0, 1, 1, 2, 3, 4))
        names = rng.sample(_IMAGES + _VIDEOS, count) if rng.random() < 0.3 else rng.sample(_IMAGES, count)
        files = [f"###{name}###" for name in names]
        if files and rng.random() < 0.05:
            words = ""  # files alone: nothing says what to make
        place = rng.choice(("before", "inside", "after"))
        if place == "before":
            text = " ".join([*files, words])
        elif place == "after":
            text = " ".join([words, *files])
        else:
            cut = max(words.rfind(" ", 0, len(words) // 2 + 1), len(words) // 2 if " " not in words else 0)
            text = " ".join([words[:cut], *files, words[cut:]])
        out.append(text.strip())
    return out


__all__ = ["PHRASES", "generated_requests"]
