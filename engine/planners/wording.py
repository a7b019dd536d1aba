"""The rules planner's words: what each wording of a request looks like, as compiled patterns.

Data for :mod:`engine.planners.rules` (which reads it as ``w.NAME``): the understanding and
generation words, the output nouns, what a file's neighbouring words or its name say it is for
(mask, control, reference, first or last frame), files named by position, and the outpaint and
extension wordings, in every language the planner reads (its docstring lists them). The sizes,
lengths and margins are :mod:`engine.planners.measures`; the edit verbs other modules read too are
:mod:`engine.lexicon`. Adding a word is a change here, not in the planner's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..lexicon import EDIT_VERBS, SPACED, UNSPACED

# ---------------------------------------------------------------------------------------------
# Vocabulary. Everything is matched on the lowercased planner text, where each file is a
# ``<imgpad>`` / ``<vidpad>`` placeholder, so paths never look like words or sizes, and a file
# named by its position ("the second image") is a ``<ref>`` (see ``rules._positions``). English comes
# first in each list, then Spanish, French, German, Portuguese and Italian; Chinese and Japanese
# words stand apart because ``\b`` finds no word edges in text written without spaces.


def _alternatives(words: Iterable[str]) -> str:
    """A regex alternation of literal words, the longest first."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


PAD = re.compile(r"<(?:img|vid)pad>")
ANY_PAD = r"(?:<(?:img|vid)pad>|<ref>)"

# Understanding: the first word after greetings and polite openings, or text asked for.
POLITE = re.compile(
    r"^(?:please|pls|kindly|hey|hi|hello|ok|okay|so|now|also|and|then|could you|can you|would you"
    r"|will you|would you mind|i(?:'d| would) like(?: you)? to|i want(?: you)? to|i need(?: you)? to"
    r"|i'd love(?: you)? to|help me|let's|let me|is it possible to|try to|go ahead and"
    r"|por favor|s'il te plaît|s'il vous plaît|bitte|per favore|hola|bonjour|hallo|ciao|olá"
    r"|kannst du|können sie|könntest du|puedes|podrías|puede|peux-tu|pouvez-vous|pourrais-tu"
    r"|pourriez-vous|podes|pode|você pode|puoi|potresti|può)\b[\s,!:]*"
)
UNDERSTAND_FIRST = frozenset(
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
DESCRIBING_VERBS = frozenset(
    {"is", "are", "was", "were", "has", "have", "does", "do", "should", "ist", "sind"}
)
TEXT_OUTPUT = re.compile(
    r"\b(?:generate|create|write|give|make|produce|provide|suggest|compose|draft)\s+(?:me\s+)?"
    r"(?:a|an|the|some|\d+)?\s*(?:\w+\s+)?(?:captions?|descriptions?|summary|summaries|titles?|"
    r"story|stories|poems?|lists?|answers?|explanations?|transcripts?|reports?|tags?|hashtags?|"
    r"alt text|names?|ideas?|prompts?|essays?|letters?|emails?|jokes?|haikus?|lyrics|scripts?|"
    r"tweets?|paragraphs?|sentences?|text)\b"
    r"|写(?:一|个|首|段|篇|份)|翻译|翻譯|翻訳|書いて"
)
QUESTION = re.compile(
    r"\?|\b(?:describe|explain|summari[sz]e|how many|what|why|caption|identify|count)\b"
    r"|什么|什麼|多少|为什么|為什麼|怎么|怎麼|描述|解释|解釋|总结|總結|介绍|介紹|吗|嗎|是否"
    r"|何が|何を|何の|何人|なぜ|いくつ|説明|ですか|ますか|でしょうか|教えて"
)

# Generation.
CREATE = re.compile(
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
EDIT = re.compile(
    r"\b(?:" + _alternatives(w for lang in SPACED for w in EDIT_VERBS[lang].all) + r")\b"
    r"|\bturn\b.{0,80}?\binto\b"
    r"|\bmake\s+(?:the|this|these|those|his|her|its|their|it|them|him|all|every|" + ANY_PAD + r")\s"
    r"|" + _alternatives(w for lang in UNSPACED for w in EDIT_VERBS[lang].all)
)
ANIMATE = re.compile(
    r"\banimat(?:e|es|ed|ing|ion|ions)\b|\bbring\b.{0,40}?\bto life\b|\bcomes? (?:alive|to life)\b"
    r"|\bmake\s+(?:it|this|them|him|her|" + ANY_PAD + r")\s+(?:move|moving|dance|dancing|walk|walking"
    r"|run|running|talk|talking|smile|blink|wave|jump|fly|swim|spin|sing)\b|\bin motion\b"
    r"|\banim(?:ar|are|er|ez|iere|ieren|iert|ier)\b"
    # "anime"/"anima" are also nouns ("an anime girl"): only as a verb with its object after it.
    r"|\banim[ae]\s+(?:esta|este|esa|ese|essa|esse|isto|isso|questa|questo|quest'|cette|cet|ce|ces"
    r"|la|le|les|l'|mi|mis|ma|mon|mes|minha|meu|mia|mio|il|lo|el|a|o|" + ANY_PAD + r")"
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
OUTPUT_NOUN = re.compile(
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
INPUT_DETERMINER = re.compile(
    r"(?:\b(?:this|that|these|those|my|our|your|attached|given|above|following|provided|uploaded|input"
    r"|source|original|reference|pose|depth|edge|control|mask"
    r"|esta|este|esa|ese|estas|estos|cette|cet|ce|ces|mon|ma|mes|diese|dieses|diesen|dieser|diesem"
    r"|mein|meine|meinem|meinen|essa|esse|nesta|neste|desta|deste|minha|meu|questa|questo|mia|mio)\s+"
    r"|这张|這張|这个|這個|这段|這段|这幅|這幅|此|该|該|この|その)$"
)

# What a file is for, from the words near its marker (near) or from its file name (name).
NEAR_MASK = re.compile(
    r"\bmasks?\b|\bmasked\b|\bmatte\b|\bmáscaras?\b|\bmascaras?\b|\bmasques?\b|\bmasken?\b"
    r"|\bmaschera\b|遮罩|蒙版|掩码|掩碼|掩膜|マスク"
)
NAME_MASK = re.compile(r"mask|masque|mascara|maschera")
# "###b.png### marks the region", "the red area in ###b.png### shows where": that file is the mask.
NEAR_REGION = re.compile(
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
NEAR_CONTROL = re.compile(r"\b(?:" + _CONTROL_WORDS + r")\b")
NAME_CONTROL = re.compile(
    r"(?<![a-z])(?:open)?(?:pose|depth|canny|edges?|sketch|scribble|lineart|line art|skeleton|control"
    r"|seg|segmentation)(?:map|maps|video|vid|img|image|s)?(?![a-z])"
)
# "following the motion of ###dance.mp4###": motion transfer is controllable generation too; so
# are "the same depth/layout", "keep the outline", "colourise".
MOTION_CONTROL = re.compile(
    r"\b(?:follow(?:s|ing)?|copy(?:ing)?|mimic(?:s|king)?|same|match(?:es|ing)?|keep(?:s|ing)?)\s+"
    r"(?:the\s+)?(?:motion|movements?|moves|choreography|dance moves|poses?|depth|layout|outlines?"
    r"|edges|contours?|optical flow)\b"
    r"|\bcolou?ri[sz](?:e|es|ed|ing)\b|\bcolou?r(?:ise|ize)?\s+(?:in|this|the)\b|\badd colou?rs?\b"
)
#: What a control request follows, from its wording (first match wins), for ``control_kind``.
CONTROL_KINDS: tuple[tuple[str, re.Pattern], ...] = (
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


CONTROL_PHRASE = re.compile(
    r"\b(?:" + _CONTROL_WORDS + r")\s+(?:map|maps|video|videos|image|images|sequence|clip|input"
    r"|condition|guide|frames)\b"
)
REFERENCE = re.compile(
    r"\breferences?\b|\bref\b|\bface[ -]?id\b|\bidentity\b|\bsubjects?\b|\blikeness\b|\bfeaturing\b"
    r"|\bstarring\b|\bsame (?:person|face|man|woman|girl|boy|guy|character|dog|cat|pet|product|outfit"
    r"|object)\b|\bthis (?:person|man|woman|girl|boy|guy|lady|character|dog|cat|pet|product|object"
    r"|toy|face|kid|child|baby)\b|\b(?:person|man|woman|girl|boy|guy|lady|character|dog|cat|pet"
    r"|product|object|toy|face|people|kid|child|baby|car)s? (?:in|from|of) (?:the |this )?"
    r"(?:photo |image |picture )?" + ANY_PAD
)
NAME_REFERENCE = re.compile(r"(?<![a-z])(?:ref|reference|subject|face|faceid|identity)(?![a-z])")
# Several subjects brought into one scene: reference generation with every image.
COMPOSE = re.compile(
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
FIRST_FRAME_NOUN = re.compile(r"\b" + _FIRST_ADJ + r"\s+(?:frames?|shots?|stills?)\b")
LAST_FRAME_NOUN = re.compile(r"\b" + _LAST_ADJ + r"\s+(?:frames?|shots?|stills?)\b")
# Next to a file: "as the first image", or a verb right before it: "starts with ###a.png###",
# "ends on this image ###b.png###" (not "a clip that ends with the car arriving ###a.png###").
FIRST_NEAR = re.compile(r"\b" + _FIRST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
LAST_NEAR = re.compile(r"\b" + _LAST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
FIRST_VERB = re.compile(
    r"\b(?:starts?|starting|begins?|beginning|opens?|opening)\s+(?:with|from|on|at)\b(?:\s+\S+){0,2}\s*$"
)
LAST_VERB = re.compile(
    r"\b(?:ends?|ending|finish(?:es)?|finishing|closes?|closing|lands?|arrives?)\s+(?:with|on|at|in)\b"
    r"(?:\s+\S+){0,2}\s*$"
)
# Words said of a file named by position ("the last image should be where the clip ends"): they
# are about that file alone, so a bare "ends" or "start" is enough.
SAID_FIRST = re.compile(r"\b(?:starts?|starting|begins?|beginning|opens?|opening|start|first)\b")
SAID_LAST = re.compile(r"\b(?:ends?|ending|finish(?:es)?|finishing|closes?|closing|end|last|final)\b")
# "as the first and last frames": both ends named at once; the files' order then decides.
BOTH_ENDS = re.compile(r"\b" + _FIRST_ADJ + r"\s+(?:and|&|/)\s+" + _LAST_ADJ + r"\s+" + _FRAME_NOUNS + r"\b")
WEAK_FIRST = re.compile(r"\bfrom\b")
WEAK_LAST = re.compile(r"\b(?:to|into|until|towards?)\b")
NAME_FIRST = re.compile(r"(?<![a-z])(?:first|start|begin|beginning|opening|initial)(?![a-z])")
NAME_LAST = re.compile(r"(?<![a-z])(?:last|end|ending|final|closing)(?![a-z])")
TRANSITION = re.compile(r"\btransition\w*|\bmorph\w*|\binterpolat\w*|\bbetween\b|\bblend\w*|\bfrom\b.*\bto\b")

_SPATIAL = (
    r"canvas|borders?|sides?|edges|left|right|top|bottom|wider|taller|pixels?|px|aspect|field of view"
    r"|surroundings|around|\d+\s*:\s*\d+"
    r"|lados?|côtés?|seiten|lati|bordes|bords|ränder|bordi|izquierda|derecha|gauche|droite|links"
    r"|rechts|sinistra|destra|esquerda|direita|lienzo|toile|leinwand|píxeles"
)
_CJK_SPATIAL = r"左右|两边|兩邊|两侧|兩側|両側|上下|四周|画布|畫布|画面|畫面|向左|向右"
OUTPAINT = re.compile(
    r"\b(?:outpaint\w*|uncrop\w*|zoom(?:ed|ing)? out|widen\w*|expand\w*)\b|\baspect ratio\b"
    r"|\b(?:extend\w*|enlarg\w*|grow|pad|padding)\b.{0,60}?\b(?:" + _SPATIAL + r")\b"
    r"|\bmake\s+(?:it|the \w+|" + ANY_PAD + r")\s+(?:wider|taller)\b"
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
EXTEND = re.compile(
    r"\b(?:continue\w*|extend\w*|lengthen\w*|prolong\w*|what happens next|what comes next|carry on"
    r"|keep going|contin[uú]a\w*|contin[uú]e\w*|sigue|seguir|alarga\w*|poursui\w*|la suite|fortsetz\w*"
    r"|fortf[üu]hr\w*|verl[äa]nger\w*|allung\w*|estend\w*|extiend\w*|étend\w*)\b"
    r"|\bkeep\b.{0,40}?\bgoing\b|\bsetze?\b.{0,40}?\bfort\b|\b(?:seconds?|secs?|minutes?)\s+longer\b"
    r"|\b(?:more|extra|additional|further|weitere|weiteren)\s+(?:seconds?|secs?|frames|sekunden)\b"
    r"|\bsegundos\s+m[áa]s\b|\bm[áa]s\s+segundos\b|\bsecondes de plus\b|\bsecondi in più\b"
    r"|\b(?:noch|otros|otras|outros|outras|altri|altre)\s+[0-9]+\b"
    # "make the clip 3 seconds longer", not "make the dog's tail longer"
    r"|\bmake\s+(?:it|this|the (?:video|clip|footage|movie|film)|" + ANY_PAD + r")\s+(?:\S+\s+){0,2}?longer\b"
    r"|继续|繼續|延长|延長|接着|接著|续写|續寫|再来|再來|続けて|続き|伸ばして"
)
EXTEND_IMAGE = re.compile(
    r"\b(?:extend\w*|expand\w*|enlarg\w*|extiend\w*|étend\w*|étendre|erweiter\w*|estend\w*)\b"
    r"|扩展|擴展|扩大|擴大|延伸|広げ|拡張"
)

# Words that end the clause a file's marker sits in (the words "near" a file stop there).
BOUNDARY = re.compile(r"[.;!?,\n]|\b(?:and|then|but|while|plus|also)\b")
# A clause between two files that starts like this describes the file before it.
ATTACHES_BACK = re.compile(
    r"\s*(?:\(|(?:as|is|=|being|will be|should be|serves|works|acts|marks?|shows?|indicates?"
    r"|highlights?|outlines?|covers?|defines?|es|est|ist|é|è|como|comme|als|come)\b)"
)
NEAR_WORDS = 8

# Files named by position: "the first image", "the second one", "the last video", "image 2".
ORDINALS: dict[str, int] = {
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
_ORDINAL = "(?P<ord>" + "|".join(sorted(ORDINALS, key=len, reverse=True)) + ")"
_POS_NOUN = r"(?:(?P<img>" + _POS_IMAGE + r")|(?P<vid>" + _POS_VIDEO + r")|one|file|input|upload|attachment)"
_CJK_POS_NOUN = r"(?:(?P<img>" + _CJK_IMAGE_NOUNS + r"|图|圖)|(?P<vid>" + _CJK_VIDEO_NOUNS + r"))?"
_CJK_CLASSIFIER = r"(?P<cls>张|張|个|個|幅|段|枚|本|部|の)?"
#: The ways a file is named by position, each with ``ord`` (a word of ORDINALS) or ``num``
#: (1-based), and ``img``/``vid`` when the kind is said. CJK forms need a classifier or a noun,
#: so that 第一帧 / 最后一帧 ("the first / last frame") stay frame wording.
POSITIONS = (
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
FRAME_ROLE_BEFORE = re.compile(
    r"\b(?:as|be|becomes?|is|como|comme|als|come|sea|soit|sei|ser|être|sein)\s+" + _ARTICLE + r"?\s*$"
)
# Clauses for words said of a file by position: the near-word boundaries and "and" in the other
# languages ("usa la primera como máscara y cambia la segunda").
POSITION_CLAUSE = re.compile(r"[.;!?,:\n]|\b(?:and|then|but|while|also|y|et|und|e|puis|dann|poi|então)\b")
