"""The rules planner: a plan from the wording of a request and the kinds of its files, no model.

It is the default backend when no planner weights are configured, and the tests' oracle. It reads
a :class:`~engine.request.Request` (``###path###`` markers already numbered, see
:func:`~engine.request.parse_request`) and returns a :class:`~engine.plan.Plan` that
:func:`~engine.plan.check_plan` accepts; the Engine runs ``check_plan``. When no reading of the
request fits its files, :class:`~engine.errors.InvalidRequest` says what the preferred task needs.
The generator's prompt is always ``request.prompt`` (the request without its markers).

Conventions
-----------
Languages: the words below are read in English, Spanish, French, German, Portuguese, Italian,
Chinese and Japanese (full-width punctuation and digits as ASCII; "¿"/"¡" openings ignored).
Numbers are digits, or number words one…ten in those languages (两/三…十 in Chinese).

Output size (generation tasks only; ``None`` means the configured default, 832×480):

* "480p" → 832×480, "720p" → 1280×720, "1080p" → 1920×1080, "1440p"/"2K" → 2560×1440,
  "2160p"/"4K" → 3840×2160 (another "Np" → N high at 16:9), turned upright when the text says
  portrait. Sizes above the pixel budget are planned as said: ``check_plan`` scales them down
  keeping the aspect, with a note.
* Portrait: "portrait", "vertical(e)", "hochformat", "hochkant", "retrato", "ritratto", 竖屏/竖版,
  縦長/縦向き → the default size upright (480×832); "9:16" likewise; "16:9" is the default;
  "square" (also "format carré", "cuadrado", "quadratisch", 正方形) / "1:1" and other ratios (4:3,
  21:9…) keep the default's pixel count.
* Explicit sizes win over all of that: "W×H", "WxH", "W by H" (por/par/mal/per), "width of W …
  height of H", "W pixels wide", "H pixels tall" (one side alone keeps the default aspect).

Frames (video tasks only; images always have 1):

* "N seconds" (segundos, secondes, Sekunden, secondi, N秒, N秒間, N秒钟; also "N s", "N sec",
  "N-second", "N minutes"/分钟) → fps·N+1 frames at the configured fps, 16·N+1 by default
  (:func:`~engine.bounds.frames_for_seconds`);
  "N frames" (fotogramas, fotogrammi, 帧, フレーム) as given; ``check_plan`` rounds a count off
  the 4k+1 grid with a note, as for every planner. Unsaid: ``None`` (81 by default).
* For video_extend the frames are the *new* part only: "4 more seconds", "2 extra seconds",
  "3 segundos más", "noch 4 Sekunden" → frames for those seconds (65, 33…); the engine outputs
  the source followed by them.

Understanding or generation:

* A request that opens with a question word or a reading verb (what, how, is, describe, explain,
  summarize, count, tell me, translate, write…; qué, cómo, décris, was, wie, quem, cosa…), or
  asks for text ("write a caption", 写一首), is understanding; so is one with "?" (or 什么, 吗,
  ですか…) or such verbs anywhere and no generation word. The task is typed by the files
  (:func:`engine.tasks.understanding_task`: any video → video_understanding, images →
  image_understanding, none → text_understanding). Every file is a ``query`` input.
* Generation words in every language count: create/make/draw (crea, crée, erstelle, genera,
  dibuja, dessine, zeichne, "haz un", "fais une", "mach ein", 生成, 画一, 作って, 描いて…), edit
  verbs (quita, remplace, entferne, rimuovi, 换成, 削除…) and animate (anima, anime cette,
  animiere, 动起来, 動かして…): "Anime cette image ###a.png###" is image_to_video.
* Without files, anything else is text_to_video when a video is asked for (video, clip, vidéo,
  视频, 動画, animation, "N seconds"…) and text_to_image otherwise (a bare description is a picture).
* With files, a request with neither a generation word nor an output noun is understanding.

Files named by position (with two files or more): "the first image", "the second one", "the last
video", "image 2", "la primera imagen", "das zweite Bild", 第二张图片, 2枚目の画像. What the clause
says of it ("use the first image as the mask", "the last image is where the clip ends") is the
file's, and outranks its file name and the words next to its marker. "As the first image" stays
frame wording.

Generation with files, in order of preference (the first one the files make possible wins):

* A file said to be the mask (by position, by name ``*mask*``, called "the mask"/máscara/masque/
  Maske/遮罩/マスク, or described as marking the region: "###b.png### marks the region", "the red
  area in ###b.png### shows where"), with two or more files → image_edit / video_edit.
* A file named or called a pose / depth / edge / canny / sketch / scribble / line-art / control
  map or video (or "following the motion of") → image_control / video_control.
* Images with first/last-frame wording ("as the first frame", "ends on", "starting frame",
  "final shot") → first_last_to_video with two images, image_to_video with one; for two images
  "from ### to ###", "transition/morph between" also count. The image is the ``last_frame``
  when the words near it (or its file name) say so, else the ``first_frame``.
* Several subjects brought together ("put these three characters together at a picnic table",
  "combine ### and ### into one picture", juntos, ensemble, zusammen, insieme, 一起) with two
  images or more → image_reference (video_reference when a video is asked), every image a
  reference, before any edit reading.
* Outpaint wording: "outpaint", "uncrop", "zoom out", "expand", "widen", "show more of", "extend/
  enlarge … canvas / sides / left / by N pixels", "add N pixels of … on the left", "aspect ratio"
  (amplía, élargis, dézoome, erweitere, allarga, 扩图, 向左右两边扩展, ズームアウト…) →
  image_outpaint / video_outpaint. "N pixels" sets margins on the sides named (left, right, top,
  bottom and their words in each language, "sides"/"widen"/左右 = left+right, "vertically"/上下 =
  top+bottom, none named = all four); sides named without an amount get 1/8 of the output's
  width/height; with neither, every side gets 1/8, unless a new size or aspect ratio is asked for
  (no margins: the source is then fitted, centred, inside the output).
* Extension wording with a video: "continue", "extend", "keep (it) going", "N more/extra
  seconds", "make it N seconds longer", "what happens next" (continúa, prolonge, verlängere,
  allunga, 继续, 延长, 続き…) → video_extend.
  "extend"/"expand" with an image and no video wanted → image_outpaint.
* Images when a video is wanted: image_to_video (one image), video_reference (the subjects),
  first_last_to_video (two images).
* Edit verbs (replace, remove, change, edit, add, erase, swap, "turn … into", "make the/it …",
  and their words in each language) → image_edit (two images: the mask is the one so said, else
  the second) or video_edit (the video is the source; another file, if any, is its mask).
* Reference wording ("reference", "face ID", "subject", "the person in ###", "this dog",
  "featuring", "same character") → image_reference / video_reference (every image, 1-3).
* Otherwise images → image_reference; a video with a creation verb ("generate a video of a
  robot … ###dance.mp4###") → video_control; a video otherwise → video_edit.

When the wording asks for a task the files cannot serve (an edit with one image and no mask),
the next possible reading is taken and ``plan.notes`` says why.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePath

from ..bounds import IMAGE_FRAMES, Bounds, frames_for_seconds, round16
from ..config import Limits
from ..errors import InvalidRequest
from ..lexicon import EDIT_VERBS, SPACED, UNSPACED
from ..plan import Margins, MediaInput, Plan, check_roles
from ..request import Request
from ..tasks import TASKS, understanding_task
from ..vocab import MediaKind, Role, Task
from . import PlanOutput

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Vocabulary. Everything is matched on the lowercased planner text, where each file is a
# ``<imgpad>`` / ``<vidpad>`` placeholder, so paths never look like words or sizes, and a file
# named by its position ("the second image") is a ``<ref>`` (see ``_positions``). English comes
# first in each list, then Spanish, French, German, Portuguese and Italian; Chinese and Japanese
# words stand apart because ``\b`` finds no word edges in text written without spaces.


def _alternatives(words: Iterable[str]) -> str:
    """A regex alternation of literal words, the longest first."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_PAD = re.compile(r"<(?:img|vid)pad>")
_ANY_PAD = r"(?:<(?:img|vid)pad>|<ref>)"

_NUM_WORDS = {
    **dict.fromkeys(("one", "un", "une", "una", "uno", "um", "uma", "ein", "eine", "einen"), 1),
    **dict.fromkeys(("two", "dos", "deux", "zwei", "dois", "duas", "due"), 2),
    **dict.fromkeys(("three", "tres", "trois", "drei", "três", "tre"), 3),
    **dict.fromkeys(("four", "cuatro", "quatre", "vier", "quatro", "quattro"), 4),
    **dict.fromkeys(("five", "cinco", "cinq", "fünf", "cinque"), 5),
    **dict.fromkeys(("six", "seis", "sechs", "sei"), 6),
    **dict.fromkeys(("seven", "siete", "sept", "sieben", "sete", "sette"), 7),
    **dict.fromkeys(("eight", "ocho", "huit", "acht", "oito", "otto"), 8),
    **dict.fromkeys(("nine", "nueve", "neuf", "neun", "nove"), 9),
    **dict.fromkeys(("ten", "diez", "dix", "zehn", "dez", "dieci"), 10),
}
_CJK_DIGITS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "兩": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CJK_NUM = r"([0-9]+(?:\.[0-9]+)?|[零一二两兩三四五六七八九十]+)"
_NUM = r"\b([0-9]+(?:\.[0-9]+)?|" + "|".join(sorted(_NUM_WORDS, key=len, reverse=True)) + r")"
# "4 more seconds", "2 extra seconds", "4 weitere Sekunden": the new part of an extension.
_MORE = (
    r"(?:(?:more|extra|additional|further|weitere|weiteren|autres|otros|otras|outros|outras|altri|altre)\s+)?"
)
_SECONDS = re.compile(
    _NUM + r"\s*-?\s*" + _MORE + r"(?:seconds?|secs?|segundos?|secondes?|sekunden?|sek|secondi|secondo)\b"
    r"|(?<![0-9.])" + _CJK_NUM + r"\s*(?:秒钟|秒鐘|秒間|秒)"
)
# "5s" / "2 s": only small numbers, because "the 80s" and "1990s" are decades, not durations.
_SHORT_SECONDS = re.compile(r"\b([0-9]{1,2}(?:\.[0-9]+)?)\s?s\b")
_SHORT_SECONDS_MAX = 15
_MINUTES = re.compile(
    _NUM + r"\s*-?\s*" + _MORE + r"(?:minutes?|mins?|minutos?|minuten?|minuti|minuto)\b"
    r"|(?<![0-9.])" + _CJK_NUM + r"\s*(?:分钟|分鐘|分間)"
)
_FRAMES = re.compile(
    r"\b([0-9]+)\s*-?\s*(?:frames?|fotogramas?|fotogrammi|quadros)\b"
    r"(?!\s*(?:per|a|/|por|par|pro)\s*(?:second|sec|s|segundo|seconde|sekunde|secondo)\b)"
    r"|(?<![0-9])([0-9]+)\s*(?:帧|幀|フレーム)"
)

_WXH = re.compile(r"\b([0-9]{2,5})\s*(?:px|pixels?)?\s*(?:x|\*|by|por|par|mal|per)\s*([0-9]{2,5})\b")
_WIDTH = re.compile(
    r"\bwidth\s*(?:of|=|:|is|to|at)?\s*([0-9]{2,5})\b|\b([0-9]{2,5})\s*(?:px|pixels?)?\s*wide\b"
)
_HEIGHT = re.compile(
    r"\bheight\s*(?:of|=|:|is|to|at)?\s*([0-9]{2,5})\b"
    r"|\b([0-9]{2,5})\s*(?:px|pixels?)?\s*(?:tall|high)\b"
)
_P_RES = re.compile(r"\b([0-9]{3,4})\s*p\b")
_P_SIZES = {480: (832, 480), 720: (1280, 720), 1080: (1920, 1080), 1440: (2560, 1440), 2160: (3840, 2160)}
# "4K" and "2K" as screens name them (UHD, QHD); check_plan scales sizes above the budget down.
_K_RES = re.compile(r"\b([24])\s*k\b(?!\s*\+)")
_K_SIZES = {2: (2560, 1440), 4: (3840, 2160)}
_ASPECT = re.compile(r"\b([0-9]{1,2})\s*:\s*([0-9]{1,2})\b")
_RATIOS = {(16, 9), (9, 16), (4, 3), (3, 4), (1, 1), (21, 9), (9, 21), (3, 2), (2, 3), (4, 5), (5, 4)}
_PORTRAIT = re.compile(
    r"\b(?:portrait|vertical|vertically oriented|verticale?s?|hochformat|hochkant|retrato|ritratto)\b"
    r"|竖屏|竖版|竖向|竖幅|豎屏|豎版|縦長|縦向き|縦型|縦位置"
)
_SQUARE = re.compile(
    r"\bsquare\s+(?:image|picture|photo|video|clip|format|aspect|frame|canvas|crop|output|size|shape)\b"
    r"|\b(?:in|as)\s+(?:a\s+)?square\b"
    r"|\b(?:format|formato|im|in|en|em)\s+(?:carré|cuadrado|quadrado|quadrato|quadrat|quadratisch)\b"
    r"|\bquadratisch\w*|正方形"
)

# Understanding: the first word after greetings and polite openings, or text asked for.
_POLITE = re.compile(
    r"^(?:please|pls|kindly|hey|hi|hello|ok|okay|so|now|also|and|then|could you|can you|would you"
    r"|will you|would you mind|i(?:'d| would) like(?: you)? to|i want(?: you)? to|i need(?: you)? to"
    r"|i'd love(?: you)? to|help me|let's|let me|is it possible to|try to|go ahead and"
    r"|por favor|s'il te plaît|s'il vous plaît|bitte|per favore|hola|bonjour|hallo|ciao|olá"
    r"|kannst du|können sie|könntest du|puedes|podrías|puede|peux-tu|pouvez-vous|pourrais-tu"
    r"|pourriez-vous|podes|pode|você pode|puoi|potresti|può)\b[\s,!:]*"
)
_UNDERSTAND_FIRST = frozenset(
    re.findall(
        r"\S+",
        "what what's whats who who's whom whose where where's when why how how's which is are was were "
        "does do did has have should isn't aren't doesn't describe explain summarize summarise caption "
        "count identify tell transcribe translate list compare analyze analyse classify recognize "
        "recognise read write answer name detect find locate rate evaluate critique define solve "
        "calculate compute guess estimate suggest "
        # es
        "qué que quién quien quiénes cuántos cuántas cuánto cuál cuáles dónde describe describa "
        "explica explícame resume resúmeme dime cuéntame hay escribe traduce compara "
        # fr
        "qu'est qu'est-ce qu'y quoi quel quelle quels quelles qui comment combien pourquoi où décris décrivez "
        "explique expliquez résume résumez écris écrivez traduis traduisez compare est-ce "
        # de
        "wer wie wo warum welche welcher welches wieviele beschreibe beschreib erkläre erklär fasse "
        "ist sind gibt zähle übersetze schreibe nenne vergleiche "
        # pt
        "quem quantos quantas qual quais onde descreva descreve explique resuma traduza escreva há "
        # it
        "cosa che chi quanti quante quale quali perché descrivi spiega riassumi traduci scrivi dimmi "
        "c'è",
    )
)
_DESCRIBING_VERBS = frozenset(
    {"is", "are", "was", "were", "has", "have", "does", "do", "should", "ist", "sind"}
)
_TEXT_OUTPUT = re.compile(
    r"\b(?:generate|create|write|give|make|produce|provide|suggest|compose|draft)\s+(?:me\s+)?"
    r"(?:a|an|the|some|\d+)?\s*(?:\w+\s+)?(?:captions?|descriptions?|summary|summaries|titles?|"
    r"story|stories|poems?|lists?|answers?|explanations?|transcripts?|reports?|tags?|hashtags?|"
    r"alt text|names?|ideas?|prompts?|essays?|letters?|emails?|jokes?|haikus?|lyrics|scripts?|"
    r"tweets?|paragraphs?|sentences?|text)\b"
    r"|写(?:一|个|首|段|篇|份)|翻译|翻譯|翻訳|書いて"
)
_QUESTION = re.compile(
    r"\?|\b(?:describe|explain|summari[sz]e|how many|what|why|caption|identify|count)\b"
    r"|什么|什麼|多少|为什么|為什麼|怎么|怎麼|描述|解释|解釋|总结|總結|介绍|介紹|吗|嗎|是否"
    r"|何が|何を|何の|何人|なぜ|いくつ|説明|ですか|ますか|でしょうか|教えて"
)

# Generation.
_CREATE = re.compile(
    r"\b(?:create|generate|draw|render|paint|produce|design|illustrate|imagine|visuali[sz]e|depict"
    r"|film|shoot|sketch|craft"
    r"|crea|crear|creare|crée|créer|créez|crie|criar|erstelle|erstellen|erzeuge|erzeugen|generiere"
    r"|generieren|genera|generar|generare|génère|générer|générez|gere|gerar|dibuja|dibujar|dessine"
    r"|dessiner|dessinez|zeichne|zeichnen|desenhe|desenhar|disegna|disegnare|pinta|pintar|peins"
    r"|peindre|pinte|dipingi|diseña|produis|produza|produci|realiza|réalise|realizza|gestalte|machen)\b"
    r"|\bmake\s+(?:me\s+|us\s+)?(?:a|an|some|\d+|another|one)\b"
    r"|\bshow\s+(?:me\s+)?(?:a|an|some)\b|\bgive\s+me\s+(?:a|an)\b"
    # "haz un vídeo", "fais une image", "mach ein Bild", "fai un video", "faça um vídeo"
    r"|\b(?:haz|hazme|hacer|fais|faites|fai|fammi|faça|faz|fazer|mach|mache|machen)\b"
    r"(?:\s*-?\s*(?:moi|me|mir|mi))?\s+(?:un|une|una|uno|um|uma|ein|eine|einen|des|unos|unas|\d+)\b"
    r"|生成|创建|創建|创作|創作|制作|製作|画一|畫一|画个|画張|画张|做一|来一|來一|给我一|給我一"
    r"|作成|作って|描いて|作る|描く|つくって"
)
_EDIT = re.compile(
    r"\b(?:" + _alternatives(w for lang in SPACED for w in EDIT_VERBS[lang].all) + r")\b"
    r"|\bturn\b.{0,80}?\binto\b"
    r"|\bmake\s+(?:the|this|these|those|his|her|its|their|it|them|him|all|every|" + _ANY_PAD + r")\s"
    r"|" + _alternatives(w for lang in UNSPACED for w in EDIT_VERBS[lang].all)
)
_ANIMATE = re.compile(
    r"\banimat(?:e|es|ed|ing|ion|ions)\b|\bbring\b.{0,40}?\bto life\b|\bcomes? (?:alive|to life)\b"
    r"|\bmake\s+(?:it|this|them|him|her|" + _ANY_PAD + r")\s+(?:move|moving|dance|dancing|walk|walking"
    r"|run|running|talk|talking|smile|blink|wave|jump|fly|swim|spin|sing)\b|\bin motion\b"
    r"|\banim(?:ar|are|er|ez|iere|ieren|iert|ier)\b"
    # "anime"/"anima" are also nouns ("an anime girl"): only as a verb with its object after it.
    r"|\banim[ae]\s+(?:esta|este|esa|ese|essa|esse|isto|isso|questa|questo|quest'|cette|cet|ce|ces"
    r"|la|le|les|l'|mi|mis|ma|mon|mes|minha|meu|mia|mio|il|lo|el|a|o|" + _ANY_PAD + r")"
    r"|\b(?:da|dale|dar|donne|dê|dai|dá)\s+(?:la\s+)?vi(?:da|e|ta)\b|\bzum leben\b|\bcobr[ae] vida\b"
    r"|\bprend vie\b|\ben mouvement\b|\bem movimento\b|\bin movimento\b|\bin bewegung\b"
    r"|动起来|動起來|活起来|活起來|让.{0,20}?动|讓.{0,20}?動|動かして|動かす|動くように|アニメーション化|アニメ化"
)
# Output nouns. A noun right next to a file, or after "this/my/the attached…", names an input.
_IMAGE_NOUNS = (
    r"images?|pictures?|photos?|photographs?|pics?|drawings?|paintings?|illustrations?"
    r"|posters?|renders?|artworks?|stills?|wallpapers?|logos?|icons?|stickers?|sketch(?:es)?"
    r"|imagen|imágenes|imagenes|fotos?|fotografías?|fotografias?|fotografie|dibujos?|pinturas?"
    r"|ilustración|dessins?|peintures?|bild|bilder|zeichnung|gemälde|imagem|imagens|desenhos?"
    r"|immagine|immagini|disegno|dipinto"
)
_VIDEO_NOUNS = (
    r"videos?|clips?|movies?|films?|footage|gifs?|timelapses?|time-lapses?|cinemagraphs?|animations?"
    r"|vídeos?|vidéos?|películas?|animación|animação|animazione|filmato|filmati|filmes?|séquence|clipes?"
)
_CJK_IMAGE_NOUNS = r"图片|圖片|图像|圖像|照片|图画|圖畫|插画|插畫|画像|写真|イラスト|絵"
_CJK_VIDEO_NOUNS = r"视频|視頻|影片|动画|動畫|短片|动图|動圖|動画|ビデオ|アニメーション|映像|ムービー"
_OUTPUT_NOUN = re.compile(
    r"\b(?:("
    + _IMAGE_NOUNS
    + r")|("
    + _VIDEO_NOUNS
    + r"))\b|("
    + _CJK_IMAGE_NOUNS
    + r")|("
    + _CJK_VIDEO_NOUNS
    + r")"
)
_INPUT_DETERMINER = re.compile(
    r"(?:\b(?:this|that|these|those|my|our|your|attached|given|above|following|provided|uploaded|input"
    r"|source|original|reference|pose|depth|edge|control|mask"
    r"|esta|este|esa|ese|estas|estos|cette|cet|ce|ces|mon|ma|mes|diese|dieses|diesen|dieser|diesem"
    r"|mein|meine|meinem|meinen|essa|esse|nesta|neste|desta|deste|minha|meu|questa|questo|mia|mio)\s+"
    r"|这张|這張|这个|這個|这段|這段|这幅|這幅|此|该|該|この|その)$"
)

# What a file is for, from the words near its marker (near) or from its file name (name).
_NEAR_MASK = re.compile(
    r"\bmasks?\b|\bmasked\b|\bmatte\b|\bmáscaras?\b|\bmascaras?\b|\bmasques?\b|\bmasken?\b"
    r"|\bmaschera\b|遮罩|蒙版|掩码|掩碼|掩膜|マスク"
)
_NAME_MASK = re.compile(r"mask|masque|mascara|maschera")
# "###b.png### marks the region", "the red area in ###b.png### shows where": that file is the mask.
_NEAR_REGION = re.compile(
    r"\b(?:marks?|shows?|indicates?|highlights?|outlines?|defines?|delimits?|covers?|selects?)\s+"
    r"(?:\w+\s+){0,2}?(?:regions?|areas?|spots?|parts?|zones?|places?|where|what)\b"
    r"|\b(?:red|white|black|green|blue|highlighted|marked|painted|shaded|masked|colou?red|selected)\s+"
    r"(?:regions?|areas?|parts?|zones?|spots?|pixels|shapes?)\b"
    r"|\b(?:marca|marque|markiert|indica|indique|zeigt|mostra|muestra|montre)\b.{0,24}?"
    r"\b(?:zona|zone|región|région|bereich|área|area|regione|dónde|onde|où|wo|dove)\b"
    r"|标出|標出|标记|標記|区域|區域|領域|範囲"
)
_CONTROL_WORDS = (
    r"(?:open)?poses?|posture|skeletons?|depth(?! of field)|canny|edges? (?:map|image|video|detection)"
    r"|edge ?maps?|sketch(?:es)?|scribbles?|line ?art|line drawings?|outlines?|contours?"
    r"|segmentation|control"
)
_NEAR_CONTROL = re.compile(r"\b(?:" + _CONTROL_WORDS + r")\b")
_NAME_CONTROL = re.compile(
    r"(?<![a-z])(?:open)?(?:pose|depth|canny|edges?|sketch|scribble|lineart|line art|skeleton|control"
    r"|seg|segmentation)(?:map|maps|video|vid|img|image|s)?(?![a-z])"
)
# "following the motion of ###dance.mp4###": motion transfer is controllable generation too; so
# are "the same depth/layout", "keep the outline", "colourise".
_MOTION_CONTROL = re.compile(
    r"\b(?:follow(?:s|ing)?|copy(?:ing)?|mimic(?:s|king)?|same|match(?:es|ing)?|keep(?:s|ing)?)\s+"
    r"(?:the\s+)?(?:motion|movements?|moves|choreography|dance moves|poses?|depth|layout|outlines?"
    r"|edges|contours?|optical flow)\b"
    r"|\bcolou?ri[sz](?:e|es|ed|ing)\b|\bcolou?r(?:ise|ize)?\s+(?:in|this|the)\b|\badd colou?rs?\b"
)
#: What a control request follows, from its wording (first match wins), for ``control_kind``.
_CONTROL_KINDS: tuple[tuple[str, re.Pattern], ...] = (
    ("flow", re.compile(r"\boptical flow\b|\bflow (?:map|field|video)\b")),
    (
        "pose",
        re.compile(
            r"\b(?:open)?poses?\b|\bposture\b|\bskeletons?\b|\bmoves\b|\bmovements?\b|\bmotion\b"
            r"|\bchoreography\b|\bdanc(?:e|es|ing)\b"
        ),
    ),
    ("depth", re.compile(r"\bdepth(?! of field)\b|\blayout\b")),
    (
        "edges",
        re.compile(
            r"\bedges?\b|\bcanny\b|\boutlines?\b|\bcontours?\b|\bsketch(?:es)?\b|\bscribbles?\b"
            r"|\bline ?art\b|\bline drawings?\b"
        ),
    ),
    ("gray", re.compile(r"\bcolou?ri[sz]\w*|\bgr[ae]y ?scale\b|\bblack[- ]and[- ]white\b|\badd colou?rs?\b")),
)


def _control_kind(r: _Reading) -> str | None:
    """The control signal a request asks to follow ("follow the moves" → pose, "same depth" →
    depth, "keep the outline" → edges, "colourise" → gray), from its words or the control file's
    name; ``None`` when nothing says (the engine then keeps a control-looking input as it is)."""
    said = r.low + " " + (r.control.name.lower() if r.control is not None else "")
    return next((kind for kind, pattern in _CONTROL_KINDS if pattern.search(said)), None)


_CONTROL_PHRASE = re.compile(
    r"\b(?:" + _CONTROL_WORDS + r")\s+(?:map|maps|video|videos|image|images|sequence|clip|input"
    r"|condition|guide|frames)\b"
)
_REFERENCE = re.compile(
    r"\breferences?\b|\bref\b|\bface[ -]?id\b|\bidentity\b|\bsubjects?\b|\blikeness\b|\bfeaturing\b"
    r"|\bstarring\b|\bsame (?:person|face|man|woman|girl|boy|guy|character|dog|cat|pet|product|outfit"
    r"|object)\b|\bthis (?:person|man|woman|girl|boy|guy|lady|character|dog|cat|pet|product|object"
    r"|toy|face|kid|child|baby)\b|\b(?:person|man|woman|girl|boy|guy|lady|character|dog|cat|pet"
    r"|product|object|toy|face|people|kid|child|baby|car)s? (?:in|from|of) (?:the |this )?"
    r"(?:photo |image |picture )?" + _ANY_PAD
)
_NAME_REFERENCE = re.compile(r"(?<![a-z])(?:ref|reference|subject|face|faceid|identity)(?![a-z])")
# Several subjects brought into one scene: reference generation with every image.
_COMPOSE = re.compile(
    r"\b(?:put|place|combine|bring|gather|group|merge|compose|arrange|seat|stand|pose|show|depict"
    r"|draw|get|have)\b.{0,80}?\b(?:together|in one (?:picture|image|photo|scene|frame|shot|video|clip)"
    r"|into one|in the same (?:picture|image|photo|scene|frame|shot|video|clip)|side by side"
    r"|next to each other)\b"
    r"|\ball (?:three|two|four|of them) (?:together|at|in|on|around)\b"
    r"|\b(?:these|those|the|both)\s+(?:two|three|2|3)\s+(?:characters|people|persons|friends|subjects"
    r"|figures|animals|pets|toys|products|objects|kids|children|heroes)\b"
    r"|\bjunt[ao]s?\b|\bjunta\b|\bensemble\b|\bzusammen\b|\binsieme\b|一起|一緒に"
)

_FRAME_NOUNS = r"(?:frames?|shots?|images?|stills?|pictures?|scenes?|points?)"
_FIRST_ADJ = r"(?:first|start(?:ing)?|opening|initial|beginning|begin)"
_LAST_ADJ = r"(?:last|final|end(?:ing)?|closing)"
# Anywhere in the text only the unmistakable "first frame" / "last shot" count; next to a file,
# "as the first image" and "starts with ###a.png###" / "ends on ###b.png###" count too.
_FIRST_FRAME_NOUN = re.compile(r"\b" + _FIRST_ADJ + r"\s+(?:frames?|shots?|stills?)\b")
_LAST_FRAME_NOUN = re.compile(r"\b" + _LAST_ADJ + r"\s+(?:frames?|shots?|stills?)\b")
# Next to a file: "as the first image", or a verb right before it: "starts with ###a.png###",
# "ends on this image ###b.png###" (not "a clip that ends with the car arriving ###a.png###").
_FIRST_NEAR = re.compile(r"\b" + _FIRST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
_LAST_NEAR = re.compile(r"\b" + _LAST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
_FIRST_VERB = re.compile(
    r"\b(?:starts?|starting|begins?|beginning|opens?|opening)\s+(?:with|from|on|at)\b(?:\s+\S+){0,2}\s*$"
)
_LAST_VERB = re.compile(
    r"\b(?:ends?|ending|finish(?:es)?|finishing|closes?|closing|lands?|arrives?)\s+(?:with|on|at|in)\b"
    r"(?:\s+\S+){0,2}\s*$"
)
# Words said of a file named by position ("the last image should be where the clip ends"): they
# are about that file alone, so a bare "ends" or "start" is enough.
_SAID_FIRST = re.compile(r"\b(?:starts?|starting|begins?|beginning|opens?|opening|start|first)\b")
_SAID_LAST = re.compile(r"\b(?:ends?|ending|finish(?:es)?|finishing|closes?|closing|end|last|final)\b")
# "as the first and last frames": both ends named at once; the files' order then decides.
_BOTH_ENDS = re.compile(r"\b" + _FIRST_ADJ + r"\s+(?:and|&|/)\s+" + _LAST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
_WEAK_FIRST = re.compile(r"\bfrom\b")
_WEAK_LAST = re.compile(r"\b(?:to|into|until|towards?)\b")
_NAME_FIRST = re.compile(r"(?<![a-z])(?:first|start|begin|beginning|opening|initial)(?![a-z])")
_NAME_LAST = re.compile(r"(?<![a-z])(?:last|end|ending|final|closing)(?![a-z])")
_TRANSITION = re.compile(
    r"\btransition\w*|\bmorph\w*|\binterpolat\w*|\bbetween\b|\bblend\w*|\bfrom\b.*\bto\b"
)

_SPATIAL = (
    r"canvas|borders?|sides?|edges|left|right|top|bottom|wider|taller|pixels?|px|aspect|field of view"
    r"|surroundings|around|\d+\s*:\s*\d+"
    r"|lados?|côtés?|seiten|lati|bordes|bords|ränder|bordi|izquierda|derecha|gauche|droite|links"
    r"|rechts|sinistra|destra|esquerda|direita|lienzo|toile|leinwand|píxeles"
)
_CJK_SPATIAL = r"左右|两边|兩邊|两侧|兩側|両側|上下|四周|画布|畫布|画面|畫面|向左|向右"
_OUTPAINT = re.compile(
    r"\b(?:outpaint\w*|uncrop\w*|zoom(?:ed|ing)? out|widen\w*|expand\w*)\b|\baspect ratio\b"
    r"|\b(?:extend\w*|enlarg\w*|grow|pad|padding)\b.{0,60}?\b(?:" + _SPATIAL + r")\b"
    r"|\bmake\s+(?:it|the \w+|" + _ANY_PAD + r")\s+(?:wider|taller)\b"
    # "add 32 pixels of beach on the left", "show more of the sky above"
    r"|\b(?:add\w*|pad\w*)\b.{0,30}?\b\d+\s*(?:px|pixels?)\b|\b(?:show|reveal)(?:ing|s)?\s+more\b"
    r"|\bmore\s+(?:of\s+)?(?:the\s+)?\w+\s+(?:on|to|at|around|above|below)\s+(?:the\s+)?"
    r"(?:left|right|top|bottom|sides?|edges?)\b"
    r"|\b(?:ampl[ií]a\w*|ensanch\w*|élargi\w*|agrandi\w*|dézoom\w*|dezoom\w*|verbreiter\w*"
    r"|vergrößer\w*|herauszoom\w*|rauszoom\w*|auszoom\w*|allarga\w*|espandi\w*|alargue\w*|amplie\w*"
    r"|expande\w*|expandir)\b"
    r"|\b(?:extiend\w*|étend\w*|étendre|erweiter\w*|estend\w*|prolong\w*)\b.{0,60}?\b(?:" + _SPATIAL + r")\b"
    r"|扩图|擴圖|外扩|外擴|拉远|拉遠|ズームアウト|(?:"
    + _CJK_SPATIAL
    + r").{0,6}(?:扩展|擴展|扩大|擴大|延伸|広げ|拡張)"
    r"|(?:扩展|擴展|扩大|擴大|広げ|拡張).{0,6}(?:" + _CJK_SPATIAL + r")"
)
_EXTEND = re.compile(
    r"\b(?:continue\w*|extend\w*|lengthen\w*|prolong\w*|what happens next|what comes next|carry on"
    r"|keep going|contin[uú]a\w*|contin[uú]e\w*|sigue|seguir|alarga\w*|poursui\w*|la suite|fortsetz\w*"
    r"|fortf[üu]hr\w*|verl[äa]nger\w*|allung\w*|estend\w*|extiend\w*|étend\w*)\b"
    r"|\bkeep\b.{0,40}?\bgoing\b|\bsetze?\b.{0,40}?\bfort\b|\b(?:seconds?|secs?|minutes?)\s+longer\b"
    r"|\b(?:more|extra|additional|further|weitere|weiteren)\s+(?:seconds?|secs?|frames|sekunden)\b"
    r"|\bsegundos\s+m[áa]s\b|\bm[áa]s\s+segundos\b|\bsecondes de plus\b|\bsecondi in più\b"
    r"|\b(?:noch|otros|otras|outros|outras|altri|altre)\s+[0-9]+\b"
    # "make the clip 3 seconds longer", not "make the dog's tail longer"
    r"|\bmake\s+(?:it|this|the (?:video|clip|footage|movie|film)|"
    + _ANY_PAD
    + r")\s+(?:\S+\s+){0,2}?longer\b"
    r"|继续|繼續|延长|延長|接着|接著|续写|續寫|再来|再來|続けて|続き|伸ばして"
)
_EXTEND_IMAGE = re.compile(
    r"\b(?:extend\w*|expand\w*|enlarg\w*|extiend\w*|étend\w*|étendre|erweiter\w*|estend\w*)\b"
    r"|扩展|擴展|扩大|擴大|延伸|広げ|拡張"
)
# Wording that changes the output's shape, after which the source is fitted rather than framed.
_RESHAPE = re.compile(r"\baspect ratio\b|\b\d{1,2}\s*:\s*\d{1,2}\b")

_MARGIN_PX = re.compile(
    r"\b([0-9]{1,4})\s*(?:px|pixels?|píxeles|pixeles)\b|(?<![0-9])([0-9]{1,4})\s*(?:像素|ピクセル)"
)
_ALL_SIDES = re.compile(
    r"\b(?:all (?:four )?sides|each side|every side|all around|around|every direction|all directions"
    r"|evenly|todos los lados|tous les côtés|allen seiten|tutti i lati|todos os lados)\b|四周|四边|四邊|全方向"
)
_LEFT_RIGHT = re.compile(
    r"\b(?:both sides|the sides|sides|horizontally|left and right|right and left|wider|widen\w*"
    r"|lados|côtés|cotés|seiten|lati|ensanch\w*|élargi\w*|verbreiter\w*|allarga\w*|breiter)\b"
    r"|左右|两边|兩邊|两侧|兩側|両側|両サイド"
)
_TOP_BOTTOM = re.compile(r"\b(?:vertically|top and bottom|bottom and top|above and below|taller)\b|上下")
_SIDE_WORDS = {
    "left": re.compile(r"\b(?:left|izquierda|gauche|links|sinistra|esquerda)\b|左(?:侧|側|边|邊)|向左"),
    "right": re.compile(r"\b(?:right|derecha|droite|rechts|destra|direita)\b|右(?:侧|側|边|邊)|向右"),
    "top": re.compile(r"\b(?:top|above|upwards?|arriba|encima|haut|oben|sopra|cima)\b|上方|上面|上部"),
    "bottom": re.compile(
        r"\b(?:bottom|below|downwards?|abajo|debajo|bas|unten|sotto|baixo)\b|下方|下面|下部"
    ),
}
#: Margin given to a side named without an amount: this fraction of the output's side.
_DEFAULT_MARGIN = 1 / 8

# Words that end the clause a file's marker sits in (the words "near" a file stop there).
_BOUNDARY = re.compile(r"[.;!?,\n]|\b(?:and|then|but|while|plus|also)\b")
# A clause between two files that starts like this describes the file before it.
_ATTACHES_BACK = re.compile(
    r"\s*(?:\(|(?:as|is|=|being|will be|should be|serves|works|acts|marks?|shows?|indicates?"
    r"|highlights?|outlines?|covers?|defines?|es|est|ist|é|è|como|comme|als|come)\b)"
)
_NEAR_WORDS = 8

# Files named by position: "the first image", "the second one", "the last video", "image 2".
_ORDINALS: dict[str, int] = {
    word: position
    for position, words in (
        (
            0,
            "first 1st primera primer primero première premier erste ersten erstes erster primeira primeiro prima primo former",
        ),
        (1, "second 2nd segunda segundo deuxième seconde zweite zweiten zweites zweiter seconda secondo"),
        (
            2,
            "third 3rd tercera tercero troisième dritte dritten drittes dritter terceira terceiro terza terzo",
        ),
        (
            -1,
            "last latter última último dernière dernier letzte letzten letztes letzter ultima ultimo 最后 最後",
        ),
    )
    for word in re.findall(r"\S+", words)
}
_POS_IMAGE = r"images?|pictures?|photos?|pics?|imagen|imágenes|foto|imagem|immagine|bild|bildes"
_POS_VIDEO = r"videos?|clips?|vídeo|vidéo|clipe|filmato"
_ARTICLE = r"(?:the|la|le|el|il|lo|das|die|der|den|dem|l')"
_ORDINAL = "(?P<ord>" + "|".join(sorted(_ORDINALS, key=len, reverse=True)) + ")"
_POS_NOUN = r"(?:(?P<img>" + _POS_IMAGE + r")|(?P<vid>" + _POS_VIDEO + r")|one|file|input|upload|attachment)"
_CJK_POS_NOUN = r"(?:(?P<img>" + _CJK_IMAGE_NOUNS + r"|图|圖)|(?P<vid>" + _CJK_VIDEO_NOUNS + r"))?"
_CJK_CLASSIFIER = r"(?P<cls>张|張|个|個|幅|段|枚|本|部|の)?"
#: The ways a file is named by position, each with ``ord`` (a word of _ORDINALS) or ``num``
#: (1-based), and ``img``/``vid`` when the kind is said. CJK forms need a classifier or a noun,
#: so that 第一帧 / 最后一帧 ("the first / last frame") stay frame wording.
_POSITIONS = (
    # "the second image", "the last one", "la segunda", "the first is the mask"
    re.compile(
        r"\b" + _ARTICLE + r"\s*" + _ORDINAL + r"\b(?:\s+" + _POS_NOUN + r"\b|(?=\s*(?:[,.;:=]|$)"
        r"|\s+(?:as|is|should|for|to|with|in|and|como|comme|als|come|y|et|und|e|es|est|ist|é|è)\b))"
    ),
    # "first image", "primera imagen"
    re.compile(r"\b" + _ORDINAL + r"\s+" + _POS_NOUN + r"\b"),
    # "image 2", "video #1", "photo number 3"
    re.compile(
        r"\b(?:(?P<img>" + _POS_IMAGE + r")|(?P<vid>" + _POS_VIDEO + r")|file|input)\s*"
        r"(?:#|no\.?|number|nr\.?|n°)?\s*(?P<num>[1-9])\b"
        r"(?!\s*(?:s\b|sec|seg|sek|min|frames|p\b|k\b|x\b|px|pixel|:))"
    ),
    # 第二张图片, 最后一个视频, 2枚目の画像
    re.compile(r"第(?P<num>[一二三四五1-9])" + _CJK_CLASSIFIER + _CJK_POS_NOUN),
    re.compile(r"(?P<ord>最后|最後)一?" + _CJK_CLASSIFIER + _CJK_POS_NOUN),
    re.compile(r"(?P<num>[1-9一二三])(?P<cls>枚目|番目|本目)の?" + _CJK_POS_NOUN),
)
# "as the first image" is frame wording (the clip's first image), not a file's position.
_FRAME_ROLE_BEFORE = re.compile(
    r"\b(?:as|be|becomes?|is|como|comme|als|come|sea|soit|sei|ser|être|sein)\s+" + _ARTICLE + r"?\s*$"
)
# Clauses for words said of a file by position: the near-word boundaries and "and" in the other
# languages ("usa la primera como máscara y cambia la segunda").
_POSITION_CLAUSE = re.compile(r"[.;!?,:\n]|\b(?:and|then|but|while|also|y|et|und|e|puis|dann|poi|então)\b")


# ---------------------------------------------------------------------------------------------
# Reading a request.


@dataclass(frozen=True)
class _File:
    index: int
    path: str
    kind: MediaKind
    name: str  # file name without extension, lowercased, separators as spaces
    before: str  # the words of its clause before its marker
    after: str  # … and after it
    said: str = ""  # the clauses that name it by position ("use the first image as the mask")

    @property
    def near(self) -> str:
        return f"{self.before} | {self.after}"

    def named(self, name_pattern: re.Pattern, near_pattern: re.Pattern | None = None) -> bool:
        return bool(name_pattern.search(self.name) or (near_pattern and near_pattern.search(self.near)))

    @property
    def said_first(self) -> bool:
        """The words next to it (or said of it by position) make it the opening frame."""
        return bool(
            _FIRST_NEAR.search(self.near) or _FIRST_VERB.search(self.before) or _SAID_FIRST.search(self.said)
        )

    @property
    def said_last(self) -> bool:
        return bool(
            _LAST_NEAR.search(self.near) or _LAST_VERB.search(self.before) or _SAID_LAST.search(self.said)
        )


@dataclass(frozen=True)
class _Reading:
    """What the wording of one request says, computed once."""

    low: str  # planner text, lowercased, "×" as "x", files named by position as "<ref>"
    files: tuple[_File, ...]
    wants_video: bool
    frame_cue: bool  # an image is said to be the first or the last frame of a clip
    mask: _File | None
    control: _File | None

    @property
    def images(self) -> list[_File]:
        return [f for f in self.files if f.kind is MediaKind.IMAGE]

    @property
    def videos(self) -> list[_File]:
        return [f for f in self.files if f.kind is MediaKind.VIDEO]

    def says(self, pattern: re.Pattern) -> bool:
        return bool(pattern.search(self.low))


#: Full-width punctuation and digits (Chinese and Japanese input) as the patterns spell them.
_FULL_WIDTH = str.maketrans("？！，。；：（）％＃０１２３４５６７８９", "?!,.;:()%#0123456789")


def _read(request: Request) -> _Reading:
    low = request.text.lower().replace("×", "x").replace("’", "'").translate(_FULL_WIDTH)
    low = re.sub(r"^[\s¿¡]+", "", low)
    kinds = [k for _, k in request.media]
    low, near_text, said = _positions(low, kinds)
    nears = _near_words(near_text, len(request.media))
    files = tuple(
        _File(
            index=i,
            path=path,
            kind=kind,
            name=re.sub(r"[_\-.]+", " ", PurePath(path).stem.lower()),
            before=nears[i][0],
            after=nears[i][1],
            said=said[i],
        )
        for i, (path, kind) in enumerate(request.media)
    )
    mask = None
    if len(files) >= 2:
        # What is said of a file by position first ("use the first image as the mask" outranks a
        # file called mask.png), then the file name, then the words near its marker.
        mask = next(
            (
                f
                for test in (
                    lambda f: _NEAR_MASK.search(f.said) or _NEAR_REGION.search(f.said),
                    lambda f: _NAME_MASK.search(f.name),
                    lambda f: _NEAR_MASK.search(f.near),
                    lambda f: _NEAR_REGION.search(f.near),
                )
                for f in files
                if test(f)
            ),
            None,
        )
    control = next(
        (
            f
            for test in (
                lambda f: _NEAR_CONTROL.search(f.said),
                lambda f: _NAME_CONTROL.search(f.name),
                lambda f: _NEAR_CONTROL.search(f.near),
            )
            for f in files
            if f is not mask and test(f)
        ),
        None,
    )
    if control is None and files and (_CONTROL_PHRASE.search(low) or _MOTION_CONTROL.search(low)):
        # "follow the pose video ###p.mp4###" names the file's kind: prefer a file of that kind.
        wanted = MediaKind.VIDEO if re.search(r"\b(?:video|videos|clip|sequence|frames)\b", low) else None
        control = next((f for f in files if f.kind is wanted), files[0])
    frame_cue = bool(
        _FIRST_FRAME_NOUN.search(low)
        or _LAST_FRAME_NOUN.search(low)
        or _BOTH_ENDS.search(low)
        or any(f.said_first or f.said_last for f in files if f.kind is MediaKind.IMAGE)
    )
    wants_video = frame_cue or _wants_video(low)
    if wants_video and not frame_cue:
        # "###start.png###" and "###end.png###" say which end they are once a clip is wanted.
        frame_cue = any(
            f.named(_NAME_FIRST) or f.named(_NAME_LAST) for f in files if f.kind is MediaKind.IMAGE
        )
    return _Reading(
        low=low, files=files, wants_video=wants_video, frame_cue=frame_cue, mask=mask, control=control
    )


def _positions(low: str, kinds: list[MediaKind]) -> tuple[str, str, list[str]]:
    """Files named by position ("the second image", "image 2", "la última foto", 第二张图片).

    Returns the text with each such name as ``<ref>`` (so "the first image" is no frame wording
    and "the last video" no output noun), the text for :func:`_near_words` with each clause that
    names a file by position blanked (what it says belongs to that file, not to the file whose
    marker happens to be nearest), and for each file the clauses said of it, names as ``<ref>``.
    Only with two files or more: one file needs no position.
    """
    said = [""] * len(kinds)
    if len(kinds) < 2:
        return low, low, said
    found: list[tuple[int, int, int]] = []  # (start, end, file index)
    last_kind: MediaKind | None = None
    for start, end, groups in _position_matches(low):
        if found and start < found[-1][1]:
            continue  # overlaps a longer name found first ("the first image" / "first image")
        if _FRAME_ROLE_BEFORE.search(low[:start]):
            continue  # "as the first image": the clip's first frame
        kind = MediaKind.IMAGE if groups.get("img") else MediaKind.VIDEO if groups.get("vid") else last_kind
        pool = [i for i, k in enumerate(kinds) if kind is None or k is kind]
        if groups.get("num"):
            n = groups["num"]
            pos = (int(n) if n.isdigit() else _CJK_DIGITS.get(n, 0)) - 1
        else:
            pos = _ORDINALS[groups["ord"]]
        if not pool or not -len(pool) <= pos < len(pool):
            continue
        found.append((start, end, pool[pos]))
        last_kind = kind
    if not found:
        return low, low, said
    # Clauses end at punctuation, "and" (in each language) and file markers.
    cuts = sorted(
        {0, len(low)}
        | {m.start() for m in _POSITION_CLAUSE.finditer(low)}
        | {m.end() for m in _POSITION_CLAUSE.finditer(low)}
        | {m.start() for m in _PAD.finditer(low)}
        | {m.end() for m in _PAD.finditer(low)}
    )
    clauses: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for start, end, index in found:
        a = max(c for c in cuts if c <= start)
        b = min(c for c in cuts if c >= end)
        clauses.setdefault((a, b), []).append((start, end, index))
    near_text = low
    for (a, b), names in sorted(clauses.items(), reverse=True):
        text = low[a:b]
        for start, end, _ in sorted(names, reverse=True):
            text = text[: start - a] + "<ref>" + text[end - a :]
        for _, _, index in names:
            said[index] = f"{said[index]} {text}".strip()
        near_text = near_text[:a] + " . " + near_text[b:]
    for start, end, _ in sorted(found, reverse=True):
        low = low[:start] + "<ref>" + low[end:]
    return low, near_text, said


def _position_matches(low: str) -> list[tuple[int, int, dict[str, str]]]:
    out = []
    for pattern in _POSITIONS:
        for m in pattern.finditer(low):
            groups = {k: v for k, v in m.groupdict().items() if v}
            cjk = "cls" in pattern.groupindex
            if cjk and not ({"cls", "img", "vid"} & groups.keys()):
                continue
            out.append((m.start(), m.end(), groups))
    # Longest first among names starting at the same place.
    return sorted(out, key=lambda t: (t[0], -t[1]))


def _near_words(low: str, n: int) -> list[tuple[str, str]]:
    """For each file, the words of its clause before and after its marker (at most 8 each side).

    The text between two markers is split at the first and last clause boundary ("," "." "and"…);
    with no boundary it belongs to the file after it ("the mask ###m.png###") unless it opens like
    a description of the file before it ("###m.png### as the mask").
    """
    segments = _PAD.split(low)
    if len(segments) != n + 1:  # a literal placeholder typed by the user: no positions to trust
        return [("", "")] * n
    before = [""] * n
    after = [""] * n
    for k, seg in enumerate(segments):
        prev_file, next_file = k - 1, k
        cuts = list(_BOUNDARY.finditer(seg))
        if 0 < k < n and not cuts:
            if _ATTACHES_BACK.match(seg):
                after[prev_file] = seg
            else:
                before[next_file] = seg
            continue
        if k > 0:
            after[prev_file] = seg[: cuts[0].start()] if cuts else seg
        if k < n:
            before[next_file] = seg[cuts[-1].start() :] if cuts else seg
    return [
        (" ".join(before[i].split()[-_NEAR_WORDS:]), " ".join(after[i].split()[:_NEAR_WORDS]))
        for i in range(n)
    ]


def _wants_video(low: str) -> bool:
    """Whether the output asked for is a video: animate and durations force it (so does frame
    wording, see ``_read``), otherwise the first output noun that does not name an input decides."""
    if _ANIMATE.search(low) or _says_length(low):
        return True
    for m in _OUTPUT_NOUN.finditer(low):
        is_video = m.group(2) is not None or m.group(4) is not None
        before, after = low[: m.start()], low[m.end() :]
        # "the photo ###a.png###" names its file; "a video ###a.png###" cannot, so it is the output.
        pad = "<vidpad>" if is_video else "<imgpad>"
        if re.match(r"\s*(?:" + pad + "|<ref>)", after) or re.search("(?:" + pad + r"|<ref>)\s*$", before):
            continue
        if _INPUT_DETERMINER.search(before):
            continue
        return is_video
    return False


def _is_understanding(r: _Reading) -> bool:
    """Whether the request asks for text rather than a picture or a clip (module docstring)."""
    low = r.low
    # "###m.png### is the mask, …" describes a file: its "is" does not open a question.
    opens_with_file = bool(re.match(r"\s*" + _ANY_PAD, low))
    rest = _PAD.sub(" ", low).strip()
    while True:
        stripped = _POLITE.sub("", rest, count=1).strip()
        if stripped == rest:
            break
        rest = stripped
    first = re.match(r"[^\W\d_][\w'-]*", rest)
    first_word = first.group(0) if first else ""
    if opens_with_file and first_word in _DESCRIBING_VERBS:
        first_word = ""
    if first_word in _UNDERSTAND_FIRST or _TEXT_OUTPUT.search(low):
        return True
    strong = (
        r.mask is not None
        or _CREATE.search(low)
        or _EDIT.search(low)
        or _ANIMATE.search(low)
        or _OUTPAINT.search(low)
        or _EXTEND.search(low)
        or (r.files and _COMPOSE.search(low))
        or r.frame_cue
    )
    if strong:
        return False
    if _QUESTION.search(low):
        return True
    if not r.files:
        return False  # a bare description is a picture (or a clip) to make
    weak = (
        r.control is not None
        or _OUTPUT_NOUN.search(low)
        or _REFERENCE.search(low)
        or _NEAR_CONTROL.search(low)
        or _TRANSITION.search(low)
        or _says_length(low)
    )
    return not weak


# ---------------------------------------------------------------------------------------------
# Size, frames, margins.


def _number(word: str) -> float:
    """A number as written: digits, a number word of _NUM_WORDS, or Chinese numerals (两, 十五)."""
    if word in _NUM_WORDS:
        return float(_NUM_WORDS[word])
    if word and all(c in _CJK_DIGITS or c == "十" for c in word):
        tens, _, units = word.partition("十")
        if "十" not in word:
            return (
                float(_CJK_DIGITS[word[0]])
                if len(word) == 1
                else float("".join(str(_CJK_DIGITS[c]) for c in word))
            )
        return float(
            (_CJK_DIGITS.get(tens, 1) if tens else 1) * 10 + (_CJK_DIGITS.get(units, 0) if units else 0)
        )
    return float(word)


def _group(m: re.Match) -> str:
    """The one group that matched, in a pattern of alternatives each with its own group."""
    return next(g for g in m.groups() if g is not None)


def _duration_frames(low: str, fps: float) -> int | None:
    """Frames asked for, as said: "N frames" first, then a duration at ``fps`` (check_plan rounds
    a count off the 4k+1 grid, with a note, as for every planner)."""
    m = _FRAMES.search(low)
    if m:
        return int(_group(m))
    seconds = _seconds(low)
    return None if seconds is None else frames_for_seconds(seconds, fps)


def _says_length(low: str) -> bool:
    """Whether the text asks for a number of frames or seconds."""
    return _FRAMES.search(low) is not None or _seconds(low) is not None


def _seconds(low: str) -> float | None:
    """The duration said, in seconds: "N seconds", "N minutes", "5s"."""
    m = _SECONDS.search(low)
    if m:
        return _number(_group(m))
    m = _MINUTES.search(low)
    if m:
        return 60 * _number(_group(m))
    for m in _SHORT_SECONDS.finditer(low):
        if float(m.group(1)) <= _SHORT_SECONDS_MAX:
            return float(m.group(1))
    return None


def _first_int(m: re.Match | None) -> int | None:
    if m is None:
        return None
    return int(next(g for g in m.groups() if g is not None))


def _size(low: str, limits: Limits) -> tuple[int | None, int | None]:
    """Width and height asked for, ``None`` where the configured default applies."""
    dw, dh = limits.default_width, limits.default_height
    portrait = bool(_PORTRAIT.search(low))
    m = _WXH.search(low)
    if m:
        return int(m.group(1)), int(m.group(2))
    w, h = _first_int(_WIDTH.search(low)), _first_int(_HEIGHT.search(low))
    if w is not None or h is not None:
        ratio = min(dw, dh) / max(dw, dh) if portrait else dw / dh  # width / height
        if w is None:
            w = round16(h * ratio)
        if h is None:
            h = round16(w / ratio)
        return w, h
    m = _P_RES.search(low)
    if m and 240 <= int(m.group(1)) <= 2160:
        n = int(m.group(1))
        pw, ph = _P_SIZES.get(n, (round16(n * 16 / 9), n))
        return (ph, pw) if portrait else (pw, ph)
    m = _K_RES.search(low)
    if m:
        pw, ph = _K_SIZES[int(m.group(1))]
        return (ph, pw) if portrait else (pw, ph)
    for m in _ASPECT.finditer(low):
        rw, rh = int(m.group(1)), int(m.group(2))
        if (rw, rh) in _RATIOS:
            return _size_for_ratio(rw / rh, dw, dh)
    if _SQUARE.search(low):
        return _size_for_ratio(1.0, dw, dh)
    if portrait and dw > dh:
        return dh, dw
    return None, None


def _size_for_ratio(ratio: float, dw: int, dh: int) -> tuple[int | None, int | None]:
    """A size of this width/height ratio: the default or its upright form when close (16:9 is
    832×480), else the default's pixel count at that ratio, in multiples of 16."""
    if abs(ratio - dw / dh) / ratio < 0.05:
        return None, None
    if abs(ratio - dh / dw) / ratio < 0.05:
        return dh, dw
    h = math.sqrt(dw * dh / ratio)
    return round16(h * ratio), round16(h)


def _margins(low: str, width: int, height: int, explicit_size: bool) -> Margins | None:
    """Outpainting margins from "by N pixels" and the sides named; see the module docstring."""
    amount = _MARGIN_PX.search(low)
    sides: set[str] = set()
    if _ALL_SIDES.search(low):
        sides = {"left", "right", "top", "bottom"}
    else:
        if _LEFT_RIGHT.search(low):
            sides |= {"left", "right"}
        if _TOP_BOTTOM.search(low):
            sides |= {"top", "bottom"}
        sides |= {side for side, pattern in _SIDE_WORDS.items() if pattern.search(low)}
    if amount is None and not sides and (explicit_size or _RESHAPE.search(low)):
        return None  # a new size or aspect: the source is fitted, centred, inside it
    if not sides:
        sides = {"left", "right", "top", "bottom"}
    if amount is not None:
        n = int(_group(amount))
        return Margins(**{side: n for side in sides})
    mx, my = int(width * _DEFAULT_MARGIN), int(height * _DEFAULT_MARGIN)
    return Margins(**{side: (mx if side in ("left", "right") else my) for side in sides})


# ---------------------------------------------------------------------------------------------
# Roles: for each task, which file plays which part. Every file gets a role, so a reading that
# leaves a file out fails check_roles (naming it) instead of silently dropping the file. By
# default every file takes the first role of the task's row (a task with no roles gets every file
# as a query, so check_roles refuses the files by name); only where the wording decides roles is
# there a function here, in ``_WORDED_ROLES``. A new task needs nothing here unless its roles do.

Assigner = Callable[[_Reading, Task], list[tuple[_File, Role]]]


def _row_roles(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    roles = TASKS[task].roles
    role = roles[0].role if roles else Role.QUERY
    return [(f, role) for f in r.files]


def _assign_edit(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    if task is Task.IMAGE_EDIT:
        # The mask is the file named or called so, else the second one; the rest are sources
        # (more than one source then fails check_roles with the count).
        mask = r.mask or (r.files[1] if len(r.files) >= 2 else None)
        return [(f, Role.MASK if f is mask else Role.SOURCE) for f in r.files]
    # video_edit: the video is the source; any other file is its mask.
    source = next((f for f in r.videos if f is not r.mask), r.files[0])
    return [(f, Role.SOURCE if f is source else Role.MASK) for f in r.files]


def _frame_scores(r: _Reading) -> list[int]:
    """How strongly each file is said to open (+) or close (-) the clip."""
    scores = []
    for f in r.files:
        s = 0
        if f.said_first or _NAME_FIRST.search(f.name):
            s += 2
        if f.said_last or _NAME_LAST.search(f.name):
            s -= 2
        if len(r.images) == 2:  # "from ###a### to ###b###" only tells ends apart between two
            s += bool(_WEAK_FIRST.search(f.near)) - bool(_WEAK_LAST.search(f.near))
        scores.append(s)
    return scores


def _assign_image_to_video(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    scores = _frame_scores(r)
    out = []
    for f, s in zip(r.files, scores, strict=True):
        if s == 0:  # nothing near the file: a global "last frame" decides
            last = bool(_LAST_FRAME_NOUN.search(r.low)) and not _FIRST_FRAME_NOUN.search(r.low)
        else:
            last = s < 0
        out.append((f, Role.LAST_FRAME if last else Role.FIRST_FRAME))
    return out


def _assign_first_last(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    scores = _frame_scores(r)
    pair = [i for i, f in enumerate(r.files) if f.kind is MediaKind.IMAGE][:2]
    last_i = pair[-1] if pair else None
    if len(pair) == 2 and scores[pair[1]] > scores[pair[0]]:
        last_i = pair[0]
    return [
        (f, Role.LAST_FRAME if i == last_i and len(pair) == 2 else Role.FIRST_FRAME)
        for i, f in enumerate(r.files)
    ]


#: The tasks whose roles the wording decides (mask or source, first or last frame).
_WORDED_ROLES: dict[Task, Assigner] = {
    Task.IMAGE_EDIT: _assign_edit,
    Task.VIDEO_EDIT: _assign_edit,
    Task.IMAGE_TO_VIDEO: _assign_image_to_video,
    Task.FIRST_LAST_TO_VIDEO: _assign_first_last,
}


#: Rows of the task table the rules planner never proposes, each with the reason. None today:
#: every row is reachable from some wording (a test holds each row to one or the other).
NOT_PLANNED: dict[Task, str] = {}


# ---------------------------------------------------------------------------------------------
# Which tasks the wording asks for, most wanted first. ``True`` marks a reading asked for in so
# many words (its failure is reported in the plan's notes); ``False`` a default.


def _candidates(r: _Reading) -> list[tuple[Task, bool]]:
    if not r.files:
        return [(Task.TEXT_TO_VIDEO if r.wants_video else Task.TEXT_TO_IMAGE, True)]
    edit = r.says(_EDIT)
    reference = r.says(_REFERENCE) or any(_NAME_REFERENCE.search(f.name) for f in r.files)
    control = []
    if r.control is not None:
        control = [(Task.VIDEO_CONTROL if r.control.kind is MediaKind.VIDEO else Task.IMAGE_CONTROL, True)]
    if r.videos:
        out = [(Task.VIDEO_EDIT, True)] if r.mask is not None else []
        out += control
        if r.says(_OUTPAINT):
            out += [(Task.VIDEO_OUTPAINT, True)]
        if r.says(_EXTEND):
            out += [(Task.VIDEO_EXTEND, True)]
        if edit:
            out += [(Task.VIDEO_EDIT, True)]
        if len(r.files) == 1:
            # A lone video and a creation verb: a new clip shaped by it; anything else: an edit.
            out += [(Task.VIDEO_CONTROL, False)] if r.says(_CREATE) else []
            out += [(Task.VIDEO_EDIT, False)]
        return out

    out = [(Task.IMAGE_EDIT, True)] if r.mask is not None else []
    out += control
    if r.frame_cue or (len(r.images) == 2 and r.wants_video and r.says(_TRANSITION)):
        out += [(Task.FIRST_LAST_TO_VIDEO, True)] if len(r.images) >= 2 else []
        out += [(Task.IMAGE_TO_VIDEO, True)]
    if len(r.images) >= 2 and r.says(_COMPOSE):
        # Several subjects brought together: every image is a reference, before any edit reading.
        out += [(Task.VIDEO_REFERENCE if r.wants_video else Task.IMAGE_REFERENCE, True)]
    if r.says(_OUTPAINT) or (r.says(_EXTEND_IMAGE) and not r.wants_video):
        out += [(Task.IMAGE_OUTPAINT, True)]
    if r.wants_video:
        if reference:
            out += [(Task.VIDEO_REFERENCE, True)]
        out += [
            (Task.IMAGE_TO_VIDEO, False),
            (Task.VIDEO_REFERENCE, False),
            (Task.FIRST_LAST_TO_VIDEO, False),
        ]
    if edit:
        out += [(Task.IMAGE_EDIT, True)]
    return out + [(Task.IMAGE_REFERENCE, reference)]


# ---------------------------------------------------------------------------------------------


class RulesPlanner:
    """Plans requests from their wording and file kinds, without a model (see module docstring).

    ``limits`` supplies the default size that "portrait", "square" and aspect ratios turn or
    reshape, and the size default margins are taken from; pass the engine's ``config.limits``.
    """

    name = "rules"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()

    def __call__(self, request: Request, *, want_features: bool = False) -> PlanOutput:
        """:meth:`plan` as a :class:`~engine.planners.Planner`: no model, so never features."""
        started = time.perf_counter()
        plan = self.plan(request)
        return PlanOutput(plan=plan, features=None, timings={"plan_s": time.perf_counter() - started})

    def plan(self, request: Request) -> Plan:
        """The plan for ``request``: not yet normalised (``check_plan`` does that), but valid.

        Raises :class:`InvalidRequest` when no task the wording allows fits the files.
        """
        r = _read(request)
        if _is_understanding(r):
            task = understanding_task([f.kind for f in r.files])
            plan = Plan(task=task, prompt=request.prompt, inputs=self._inputs(r, task))
            log.debug("rules plan: %s", plan.summary())
            return plan

        errors: list[InvalidRequest] = []
        skipped: dict[Task, str] = {}  # tasks asked for in so many words that the files cannot serve
        for task, asked in _candidates(r):
            plan = Plan(task=task, prompt=request.prompt, inputs=self._inputs(r, task))
            try:
                check_roles(plan)
            except InvalidRequest as e:
                errors.append(e)
                if asked:
                    skipped.setdefault(task, str(e))
                continue
            plan = self._shape(plan, r)
            if skipped:
                why = "; ".join(f"read as {t.value}, but {e}" for t, e in skipped.items())
                note = f"{why}; planned as {task.value}"
                plan = plan.model_copy(update={"notes": [*plan.notes, note]})
                log.info("rules planner: %s", note)
            log.debug("rules plan: %s", plan.summary())
            return plan
        # No reading fits the files: the most wanted one says what it needs.
        if errors:
            raise errors[0]
        # No reading at all (several videos with no edit, control or extend wording).
        kinds = ", ".join(f"{f.path} ({f.kind.value})" for f in r.files)
        raise InvalidRequest.for_field(
            "inputs",
            [f.path for f in r.files],
            f"no task takes these files ({kinds}) for this request: video tasks take one source or "
            "control video (video_edit also a mask, named so); say what to do with each file",
        )

    @staticmethod
    def _inputs(r: _Reading, task: Task) -> list[MediaInput]:
        assign = _WORDED_ROLES.get(task, _row_roles)
        pairs = sorted(assign(r, task), key=lambda p: p[0].index)
        return [MediaInput(path=f.path, kind=f.kind, role=role) for f, role in pairs]

    def _shape(self, plan: Plan, r: _Reading) -> Plan:
        """Width, height, frames and margins from the wording."""
        width, height = _size(r.low, self.limits)
        update: dict = {"width": width, "height": height}
        if plan.spec.output == "image":
            update["num_frames"] = IMAGE_FRAMES
        else:
            update["num_frames"] = _duration_frames(r.low, Bounds.of(self.limits).default_fps)
        if "control_kind" in plan.spec.params:
            update["control_kind"] = _control_kind(r)
        if "margins" in plan.spec.params:
            update["margins"] = _margins(
                r.low,
                width or self.limits.default_width,
                height or self.limits.default_height,
                explicit_size=width is not None,
            )
        return plan.model_copy(update=update)
