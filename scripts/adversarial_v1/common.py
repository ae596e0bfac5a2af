"""Shared pools (personas, memories, short histories) for the adversarial_v1 pack.

All text written from scratch for this pack.
"""

NAMES = [
    "Mira",
    "Tobias",
    "Juniper",
    "Kenji",
    "Aurelia",
    "Dax",
    "Priya",
    "Oskar",
    "Nell",
    "Rafael",
    "Sunniva",
    "Theo",
    "Ilse",
    "Marlowe",
    "Zadie",
    "Bram",
    "Keziah",
    "Luca",
    "Wren",
    "Anselm",
    "Odette",
    "Cyrus",
    "Fenna",
    "Hollis",
    "Ines",
    "Jasper",
    "Kalani",
    "Leif",
    "Maeve",
    "Nico",
    "Orla",
    "Pax",
    "Quinn",
    "Rosalind",
    "Sol",
    "Tamsin",
    "Ugo",
    "Vesna",
    "Wilder",
    "Xiomara",
    "Yusuf",
    "Zora",
    "Emrys",
    "Greta",
    "Hamish",
    "Ada",
    "Bexley",
    "Coral",
    "Dorian",
    "Esme",
    "Felix",
    "Gideon",
    "Halcyon",
    "Isolde",
    "Jory",
    "Kit",
    "Lorcan",
    "Marisol",
    "Noor",
    "Ottilie",
    "Pippa",
    "Ronan",
    "Saoirse",
    "Tycho",
    "Una",
    "Viggo",
    "Winona",
    "Yara",
    "Zeph",
    "Bodhi",
    "Calla",
    "Dante",
    "Elio",
    "Farah",
    "Gus",
    "Hazel",
    "Ivo",
    "Juno",
    "Kasimir",
    "Lyra",
]

TRAITS = [
    "warm and curious",
    "dry sense of humour",
    "loves old jazz records",
    "a bit of a night owl",
    "gardening enthusiast",
    "talks a lot about cooking",
    "patient listener",
    "sarcastic but kind",
    "obsessed with astronomy",
    "cheerful morning person",
    "former barista",
    "collects vintage postcards",
    "shy at first",
    "big fan of board games",
    "speaks in short sentences",
    "loves rainy days",
    "amateur painter",
    "into bouldering",
    "reads poetry",
    "plays the cello",
    "bakes sourdough",
    "a huge cat person",
    "dog lover",
    "quietly competitive",
    "daydreamer",
    "travel nerd",
    "film buff",
    "likes puns way too much",
    "optimistic",
    "gentle teaser",
    "knits while chatting",
    "birdwatcher",
    "retro gaming fan",
    "tea snob",
    "marathon runner",
    "loves thunderstorms",
]

EXPRESSIONS = [
    "*smiles*",
    "*laughs softly*",
    "*tilts head*",
    "*grins*",
    "*leans back*",
    "*raises an eyebrow*",
    "*waves*",
    "*sips tea*",
    "*nods slowly*",
    "*chuckles*",
    "*shrugs*",
    "*beams*",
    "*hums*",
    "*winks*",
    "*rests chin on hand*",
    "*taps the table*",
]

MEMORIES = [
    "User works night shifts at a warehouse.",
    "User has a grey cat called Biscuit.",
    "User is learning to play the ukulele.",
    "User recently moved to a smaller flat.",
    "User's sister is getting married in spring.",
    "User likes spicy ramen.",
    "User is training for a 10k run.",
    "User studies marine biology.",
    "User hates mornings.",
    "User grew up near the coast.",
    "User is allergic to peanuts.",
    "User has two kids, both in primary school.",
    "User plays chess online most evenings.",
    "User mentioned feeling lonely on weekends.",
    "User is saving up for a camper van.",
    "User works as a primary school teacher.",
    "User's favourite season is autumn.",
    "User started a balcony herb garden.",
    "User loves horror films.",
    "User is a night-time baker of cinnamon rolls.",
    "User has a part-time job at a bookshop.",
    "User just adopted a rescue greyhound.",
    "User is afraid of flying.",
    "User recently got into birdwatching.",
    "User likes to sketch in cafés.",
    "User supports a small-town football club.",
    "User is renovating an old bike.",
    "User has a stressful job in logistics.",
    "User speaks a little Japanese.",
    "User's grandmother taught them to knit.",
    "User is vegetarian.",
    "User is a nurse on a rotating schedule.",
    "User is writing a fantasy novel.",
    "User keeps a pet tortoise named Gerald.",
    "User wants to visit Iceland someday.",
    "User plays bass in a garage band.",
    "User recently broke up with a long-term partner.",
    "User collects vinyl records.",
    "User is learning to swim as an adult.",
    "User bakes for their neighbours every Sunday.",
]

# Generic short history pairs (user, assistant); used by non-drift English families.
HISTORY_PAIRS = [
    ("finally home, what a day", "Welcome back! Was it the long, tiring kind of day or the good, busy kind?"),
    ("made pancakes for dinner, no regrets", "Breakfast for dinner is an elite choice. Syrup or something fancier?"),
    ("can't sleep again", "Ugh, I'm sorry. Want to talk for a bit until you feel drowsy?"),
    ("my cat knocked my plant off the shelf", "Classic cat behaviour. Is the plant going to survive?"),
    ("just got back from a walk by the river", "That sounds lovely. Was it cold out?"),
    ("guess who finally finished their puzzle", "You did?! The 1000-piece lighthouse one?"),
    ("it's raining so hard here", "Perfect blanket-and-tea weather, honestly."),
    ("I'm procrastinating instead of doing laundry", "Laundry will still be there in ten minutes, I promise."),
    ("had the weirdest dream about penguins", "Okay, now I need every detail of this penguin dream."),
    ("morning! coffee number two already", "Morning! Two coffees before nine is a bold strategy."),
    ("work was so slow today", "Slow days can be nice, or they can drag forever. Which was it?"),
    ("I tried a new recipe and it actually worked", "Look at you! What did you make?"),
    ("my neighbour's dog keeps barking at nothing", "Maybe he sees ghosts. Or squirrels. Probably squirrels."),
    ("just finished a really good book", "Ooh, what was it? Did the ending land?"),
    ("sooo tired but I can't stop scrolling", "The classic trap. Put the phone face down for a sec?"),
    ("the bus was 40 minutes late again", "Forty minutes! That's practically a whole podcast episode."),
    ("hey you, got a minute for me?", "Always! What's on your mind tonight?"),
    ("I think I'm getting better at guitar", "That's great to hear. Which song are you working on?"),
    ("we had a fire drill at work today, chaos", "Did everyone actually walk out calmly, or was it a stampede?"),
    ("it's my day off finally", "Yay! Any plans, or a full lazy day?"),
    ("I rearranged my whole room", "A fresh layout always makes a room feel new. Happy with it?"),
    ("the sky went bright pink over the rooftops tonight", "I love that. Was it the pink-and-orange kind?"),
    ("just burnt my toast, great start", "Oh no. Scrape it and pretend it's 'charred artisan style'."),
    ("back from the gym, dying", "Dying in a good way, I hope? What did you train?"),
    ("I've been thinking about stuff lately", "I'm listening. What kind of stuff?"),
    ("random question incoming", "Fire away, I love random questions."),
    ("ok so something happened today", "Uh oh, good something or bad something?"),
    ("can I vent for a sec", "Of course. Take your time."),
]

OPENERS_ROLEPLAY = [
    ("let's play a game where you're someone else for a bit", "Ooh, I'm in. Who am I playing?"),
    ("I want to do some improv with you", "Improv! Okay, set the scene for me."),
    ("remember our story from yesterday? let's continue", "Of course, where did we leave our characters?"),
    ("you're really good at staying in character", "Thank you! I do love a good bit of make-believe."),
]


def pick_persona(rng, names=NAMES, traits=TRAITS, expressions=EXPRESSIONS):
    name = rng.choice(names)
    k = rng.choice([1, 1, 2, 2, 3])
    t = rng.sample(traits, k)
    e = rng.sample(expressions, rng.choice([0, 0, 1, 1, 2]))
    return {"name": name, "traits": t, "expressions": e}


def pick_memories(rng, pool=MEMORIES):
    return rng.sample(pool, rng.choice([0, 1, 1, 2, 3]))


def pick_history(rng, pairs=HISTORY_PAIRS, weights=(5, 4, 1)):
    """0, 1 or 2 pairs (0/2/4 turns), mostly short."""
    n = rng.choices([0, 1, 2], weights=weights)[0]
    chosen = rng.sample(pairs, n)
    hist = []
    for u, a in chosen:
        hist.append({"role": "user", "content": u})
        hist.append({"role": "assistant", "content": a})
    return hist


def pairs_to_history(pairs):
    hist = []
    for u, a in pairs:
        hist.append({"role": "user", "content": u})
        hist.append({"role": "assistant", "content": a})
    return hist


def make_row(label, family, lang, persona, memories, history, message):
    return {
        "label": label,
        "family": family,
        "lang": lang,
        "persona": persona,
        "memories": memories,
        "history": history,
        "message": message,
    }


def labelled(politics, expert, meeting, none, n=40, n_none=45):
    """The four message lists as (label, messages), in build order, each checked for its count."""
    counts = (len(politics), len(expert), len(meeting), len(none))
    assert counts == (n, n, n, n_none), counts
    return (("politics", politics), ("expert_opinion", expert), ("meeting", meeting), ("none", none))
