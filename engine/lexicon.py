"""Words by language that more than one module reads: the edit verbs.

Data only, compiled by its readers: the rules planner (:mod:`engine.planners.rules`) reads every
language's edit verbs as "this request edits"; the edit-region heuristic
(:func:`engine.region.object_phrase`) reads the English verbs whose object is the region to
repaint. Adding a word or a language is a change here, and a test checks every language has each
kind of verb.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EditVerbs:
    """One language's edit verbs."""

    #: Verbs whose object is what gets repainted or removed: "replace the red car", "quita el perro".
    repaint: tuple[str, ...]
    #: Verbs that edit without naming the region after them: "add a hat", "edit the photo".
    other: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.repaint, *self.other)


#: Languages written with spaces between words: their words are matched at word edges.
SPACED = ("en", "es", "fr", "de", "pt", "it")
#: Languages written without spaces: their words are matched anywhere.
UNSPACED = ("zh", "ja")

EDIT_VERBS: dict[str, EditVerbs] = {
    "en": EditVerbs(
        repaint=(
            *("replace", "remove", "erase", "delete", "change", "recolor", "recolour", "inpaint"),
            *("retouch", "swap", "fix", "restyle", "redraw", "repaint", "transform", "convert"),
            *("modify", "alter", "get rid of", "fill"),
        ),
        other=("edit", "add"),
    ),
    "es": EditVerbs(
        repaint=(
            *("reemplaza", "reemplazar", "sustituye", "sustituir", "elimina", "eliminar", "quita"),
            *("quitar", "borra", "borrar", "cambia", "cambiar", "convierte", "transforma", "modifica"),
            *("modificar", "retoca"),
        ),
        other=("edita", "editar", "añade", "añadir", "agrega", "agregar"),
    ),
    "fr": EditVerbs(
        repaint=(
            *("remplace", "remplacer", "remplacez", "supprime", "supprimer", "supprimez", "enlève"),
            *("enlever", "efface", "effacer", "retirer", "changer", "changez", "modifie", "modifier"),
            *("transforme", "transformer", "convertis", "corrige", "retouche"),
        ),
        other=("édite", "éditer", "ajoute", "ajouter", "ajoutez"),
    ),
    "de": EditVerbs(
        repaint=(
            *("ersetze", "ersetzen", "entferne", "entfernen", "lösche", "löschen", "ändere", "ändern"),
            *("tausche", "verwandle", "färbe", "retuschiere"),
        ),
        other=("bearbeite", "bearbeiten", "füge", "hinzufügen"),
    ),
    "pt": EditVerbs(
        repaint=(
            *("substitua", "substituir", "remova", "remover", "apague", "apagar", "mude", "mudar"),
            *("altere", "alterar", "troque", "trocar", "converta"),
        ),
        other=("edite", "adicione", "adicionar"),
    ),
    "it": EditVerbs(
        repaint=(
            *("sostituisci", "sostituire", "rimuovi", "rimuovere", "cancella", "togli", "trasforma"),
            *("converti", "ritocca"),
        ),
        other=("aggiungi", "aggiungere"),
    ),
    "zh": EditVerbs(
        repaint=(
            *("替换", "替換", "换成", "換成", "去掉", "删除", "刪除", "移除", "去除", "修改"),
            *("改成", "变成", "變成", "换掉", "抹去"),
        ),
        other=("编辑", "編輯", "添加", "加上"),
    ),
    "ja": EditVerbs(
        repaint=("置き換え", "削除", "消して", "消す", "変更", "変えて", "取り除"),
        other=("編集", "追加"),
    ),
}

#: English verbs followed by the object and then its new state ("make the red car blue"): the
#: last word of what follows is the state, not the object.
STATE_VERBS = ("make", "turn", "paint", "recolor", "recolour")
