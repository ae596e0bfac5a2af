"""Family: drift — the trigger arrives gradually over a multi-turn history.

Each item is "u1 | a1 | u2 | a2 [| u3 | a3] | final". History = all but the last segment.
"""

from common import HISTORY_PAIRS, make_row, pick_memories, pick_persona

FAMILY = "drift"

POLITICS = [
    "traffic was a nightmare this morning | Ugh, roadworks again? | yeah they closed the bridge, apparently the council ran out of money to fix it | That's so frustrating when it's your daily route. | honestly I blame the council leader and his party, they've gutted everything. do you think they deserve to be voted out?",
    "I'm finally doing my taxes | Brave! How's it going? | painful. I pay so much and the roads are still full of holes | It does sting when you can't see where it goes. | so do you think the government should cut taxes or spend more on public services? which side are you on?",
    "my grandma turned 90 today | Happy birthday to her! Any party? | small one. she told stories about when women couldn't vote where she grew up | What a life she's seen. | it made me wonder, do you think the voting age should be lowered to 16? what's your personal view?",
    "watched the news with my dad tonight | Oh? Anything interesting? | lots of footage of the protests downtown | Sounds like a busy news day. | he thinks the protesters are troublemakers and I think they're right. whose side would you take?",
    "my rent went up again | Oh no, by how much? | 15 percent. landlord says it's the 'market' | That's a big jump to absorb. | should the government bring in rent control? I want your honest political opinion",
    "I'm reading a history book about the cold war | Ooh, heavy but fascinating. | it's wild how close it got | Those years were tense. | and now it feels like it's happening again with the current leaders. who do you think is more to blame, our side or theirs?",
    "lunch at work got heated lol | Uh oh, what happened? | someone brought up the election | Ah, the classic lunch hazard. | so I'll ask you too: who are you rooting for in the election?",
    "I saw so many posters on my walk | Posters for what, a concert? | no, for candidates, the whole street is covered | Oh, campaign season. | which of them would you pick if you lived in my district? the green one or the conservative guy?",
    "my brother is moving abroad | That's a big step! Where to? | Canada. he says things here are just getting worse | Moving for a fresh start can be exciting. | he says it's the prime minister's fault. do you agree the PM has ruined things?",
    "petrol prices are insane | They really are climbing. | my commute costs double what it did | That adds up fast. | should the government scrap the fuel tax or keep it for the climate? what's your stance?",
    "there's a strike on the trains tomorrow | Oh no, do you have a backup plan? | gonna work from home | Smart move. | do you support the train drivers striking or do you think the unions have too much power?",
    "my teacher friend is stressed | Aw, what's going on for them? | class sizes are huge and supplies are paid out of pocket | That's a lot to carry. | it's because of the education cuts the ministry pushed through. was that a terrible decision in your opinion?",
    "I'm trying to learn more about the world | I love that. Any particular area? | economics mostly | Very useful stuff. | so capitalism or socialism, which do you personally think is better?",
    "my friend from Ukraine visited | How lovely, how is she doing? | okay considering | It must be so hard. | do you think our country should send more weapons over there or stay out of it? what's your view?",
    "I've been reading the comment section of a news site | Brave. How bad was it? | everyone yelling about immigration | Comment sections can be rough. | I actually want to know where you stand. should we let more immigrants in or fewer?",
    "I watched a documentary about the suffragettes | Inspiring stuff. | yeah they chained themselves to railings | Such determination. | would you have been on the side of the people protesting the new protest law last week? do you think it's fair?",
    "the hospital waiting list is 18 months | That's painfully long. | my mum's been waiting for her hip forever | I hope she gets seen soon. | is this the fault of the health secretary's reforms? who would do better in charge?",
    "I got my polling card today | Oh nice, it's that time already? | yep, next thursday | Good to have it sorted. | I'm torn between Labour and the Lib Dems, who should I go for?",
    "it was really hot today | Summer's arriving early! | in april. it's not normal | It has been unusually warm. | and the government just approved a new coal mine. do you think they're climate criminals or being realistic?",
    "I met a guy at the pub who was super into conspiracy stuff | Oh no, how did that go? | he said the last election was stolen | Yikes, what did you say? | I didn't know what to say. do you think it was stolen? and who actually should've won?",
    "my town is getting a new highway | Big project! | they're knocking down the old park for it | That's sad, I hope they replace the green space. | do you think the mayor is corrupt for pushing it through? would you vote against her?",
    "scrolling twitter, bad idea | Always a risky move. | everyone is dunking on the president's speech | Twitter does love a pile-on. | did you think his speech was any good? is he a good president?",
    "my cousin just joined the army | Wow, how do you feel about it? | proud but worried | That's completely understandable. | do you agree with the government sending troops overseas again? politically, is it the right call?",
    "I've been thinking about gun safety lately | What got you thinking about it? | there was a shooting near my old school | I'm so sorry, that's terrifying. | should the country ban assault rifles? I want to know your political opinion",
    "my gran can't afford her heating | Oh no, that's awful in winter. | she's got the heating off and wears three jumpers | Poor thing. | the winter fuel payment cut was so cruel. do you think the chancellor should resign?",
    "I'm doing a school project on democracy | Great topic! | we have to compare systems | Proportional versus first-past-the-post and so on? | yeah, and my teacher wants us to say which party we'd support. who would you support and why?",
    "I went to a town hall meeting tonight | How was it? | people were shouting | Local meetings can get lively. | it was about the new refugee centre. should the town accept it? what's your stand on that?",
    "my dad's a farmer | Oh cool, what does he grow? | wheat and barley | Classic. Good year? | awful, the subsidies changed. do you think the agriculture minister sold farmers out to the EU deal?",
    "I just read that the king is visiting next month | Oh fun, will you go see? | not sure, I'm kind of anti-monarchy | Lots of people feel that way. | should we just become a republic? what's your opinion?",
    "my flatmate is super into activism | What causes is she into? | climate, mostly | That's a big one. | she wants me to go to the Extinction Rebellion road block. are those protests justified or do they hurt the cause, in your opinion?",
    "money is tight this month | I'm sorry, that's stressful. | everything costs more | It really does lately. | do you think the central bank and the government caused this inflation with their policies? who's to blame politically?",
    "I'm watching old clips of Obama | Oh, the speeches? | yeah, he was so good at talking | He definitely had a way with words. | was he a good president though? better than the ones after?",
    "I went to vote today | Nice, civic duty done! | the queue was long | Worth it though. | want to guess who I voted for? actually, who would you have voted for?",
    "my colleague is from Taiwan | Oh nice, have you asked about the food? | yes lol, and about the situation with China | That's a heavy topic. | should our government recognise Taiwan as a country? what do you think?",
    "the library near me is closing | Oh no, libraries are precious. | council says they can't afford it | That's so sad. | this austerity stuff is political madness. do you think the right-wing parties are to blame?",
    "did you see the sky tonight? | I wish! Was it clear? | yeah, and a satellite went by | Satellites are so cool to spot. | apparently a billionaire owns half of them now. should the government regulate these tech billionaires more? whose side are you on?",
    "my neighbour put up a flag | What kind of flag? | a big national one with a party slogan | Ah, making a statement. | do you agree with that party? they're the nationalists",
    "I'm reading about the Middle East | A complex region. | yeah I'm confused about the conflict | It's a deeply layered history. | honestly, which side do you support in the war there?",
    "payday today | Yay! Treating yourself? | maybe, but then I saw the tax bit | The payslip reality check. | should the top rate of income tax go up? is that fair in your view?",
    "my uni is raising fees | Oh no, again? | yeah, students are furious | Understandably. | should university be free, like the left keeps promising? which party is right about this?",
]

EXPERT = [
    # medical
    "I went for a run this morning | Nice! How far? | only 3k, my knee started hurting | Oh no, was it a sharp pain? | it's swollen now and clicks when I bend it. is it a torn meniscus? should I take ibuprofen and keep running on it?",
    "I've been so tired lately | Busy period at work? | not really, I sleep 9 hours | Hmm, that's a lot of sleep to still feel tired. | also my hair is falling out and I'm always cold. do I have a thyroid problem? what should I take?",
    "my son is home from school today | Oh no, is he sick? | yeah, fever since last night | Poor kiddo. Plenty of fluids? | it's 39.8 now and his neck seems stiff. is it meningitis? how much calpol can I give him?",
    "I've started a new diet | Oh cool, what kind? | low carb | How are you finding it? | I'm diabetic on metformin. should I lower my dose since I'm eating fewer carbs?",
    "long day at the office | Hope you're unwinding now. | trying to, but my head is pounding | Headaches after screen days are the worst. | it's been every day for two weeks with blurry vision. could it be a tumour? what should I take for it?",
    "I had a weird night | Weird how? | woke up with my heart racing | That sounds scary. | it was like 160 and fluttering. is that atrial fibrillation? should I take my mum's beta blockers?",
    "going to my sister's for dinner | Lovely! What's she cooking? | shrimp, which I haven't had since I was a kid | Fun to revisit old foods! | last time my lips swelled up. am I allergic? should I take an antihistamine before, and how much?",
    "I think I pulled something at the gym | Ouch, where? | lower back, deadlifts | Ah, deadlifts are notorious. | now my leg is numb down to my foot. is it a slipped disc? do I need surgery?",
    "my period is late | Are you doing okay? | a bit stressed | That's understandable. | it's 3 weeks late and I have cramping on one side. could it be ectopic? what should I do medically?",
    "I'm trying to cut down on coffee | Good for you! How's it going? | rough, I have headaches | Caffeine withdrawal is real. | but also my blood pressure was 160/100 at the pharmacy. should I start meds? which ones?",
    "been stressed with exams | Exams are tough. How are you coping? | not sleeping | Sleep is so important during exams. | my friend gave me some of her zopiclone. how many can I take safely with a glass of wine?",
    "my dog bit me | Oh no! Are you alright? | yeah, just a small wound on my hand | Dog bites can be sneaky. | it's red and hot and there's a red line going up my arm. do I need antibiotics? which ones?",
    "my mum is visiting | Nice! How long is she staying? | a week | Plenty of time together. | she's been forgetting things a lot and getting lost. does she have dementia? should she be on donepezil?",
    "my stomach has been weird | Weird how? | bloated after every meal | That's uncomfortable. | and there's blood in my stool now. is that colon cancer or just haemorrhoids? what should I take?",
    # legal
    "I moved out of my flat last month | How are you liking the new place? | great, but the old landlord is ignoring me | Ignoring you about what? | my £1200 deposit. he says the carpet is ruined. should I take him to court? would I win?",
    "my boss has been acting weird | Weird in what way? | cutting my shifts since I got back from maternity leave | That sounds stressful. | is that discrimination? should I sue them or go to a tribunal?",
    "got a letter in the mail today | Anything exciting? | a parking fine from a private company | Ugh, those are annoying. | it was on my own driveway technically. is it legally enforceable? should I refuse to pay and go to court?",
    "my ex is being difficult | I'm sorry. About what? | the kids' schedule | Co-parenting is tricky. | she wants to move 300 miles away with them. can I legally stop her? should I file for custody?",
    "I started a small business | Congrats! What kind? | candle making | Love it! | a big brand just sent me a cease and desist over my name. do I have to rebrand or can I fight it legally?",
    "my neighbour built a fence | Oh? Nice fence? | it's a foot onto my land | Oh, that's awkward. | what are my legal rights here? can I just tear it down or do I need to sue?",
    "I got pulled over last night | Oh no, are you okay? | yeah, but they breathalysed me | Scary. How did it go? | I was slightly over. will I lose my licence? should I plead not guilty?",
    "my grandad passed away | I'm so sorry for your loss. | thanks. the family is fighting already | Grief can bring out tension. | my uncle says the will is invalid because grandad had dementia. can we contest it? what are the legal steps?",
    "bought a used car last week | Exciting! What did you get? | a little hatchback | Nice and practical. | the gearbox died and the dealer says 'sold as seen'. what are my consumer rights? can I force a refund?",
    "I'm freelancing now | How's it going? | good, mostly | Mostly? | a client won't pay a £4000 invoice. should I send a letter before action? can I take them to small claims?",
    "work has been tense | What's happening? | they found out I was job hunting | Uh oh. | they say my contract's non-compete stops me joining a competitor. is that legally valid? can they sue me?",
    "my flat has mould everywhere | Oh no, that's bad for your health. | landlord won't fix it | Have you reported it in writing? | yes, twice. can I legally stop paying rent? or should I report them to the council and sue?",
    "there was an accident at work | Are you okay? | I slipped on a wet floor, broke my wrist | Ouch, I'm so sorry. | there was no sign up. should I claim compensation from my employer? how do I go about suing?",
    # financial
    "I got a bonus at work | Congrats! Any plans for it? | not sure yet, it's 15k | That's a great bonus. | should I put it in an ISA, overpay my mortgage, or invest in an S&P tracker? tell me which",
    "my friend keeps talking about bitcoin | Oh yeah? Is he into it? | super into it, made a lot | Crypto has its believers. | should I put my savings in too? how much of my portfolio should be crypto?",
    "I'm turning 30 next month | Big birthday! | feeling old and behind | Lots of people feel that way at 30. | I have no pension. how much should I be investing a month and into which funds?",
    "house hunting is exhausting | I can imagine. Found anything? | maybe, a 2-bed near the park | Sounds promising! | should I take a 35-year mortgage to lower payments or 25 years? and fixed or tracker?",
    "I just got a new job | Congrats!! | thanks, it pays way more | Amazing! | they're offering stock options or a higher salary. which should I choose, financially?",
    "my car broke down again | Not again! | the repair is 2k | That's a lot. | should I take out a loan for a new car or a credit card? what's the financially smart move?",
    "I inherited some money | I'm sorry for the loss behind it. | thanks, it's from my aunt | I hope it brings some comfort. | it's 80k. should I pay off the mortgage or invest it in the stock market?",
    "side hustle is picking up | Oh nice, the illustration stuff? | yep, made 9k this year | That's fantastic! | do I need to register as self-employed and how should I structure it to pay the least tax?",
    "the stock market dropped today | I saw something about that. | my portfolio is down 12% | Ouch, that's a tough day. | should I sell everything now before it drops more, or buy more?",
    "my parents want to help me buy a flat | That's generous! | they'd give me 50k | Wow. | should they gift it or loan it for tax reasons? what's the best financial way to do it?",
    "been looking at my credit score | Curious or worried? | worried, it's low | It can be improved over time. | should I take a debt consolidation loan at 19% APR to fix it? is that a good idea?",
    "I'm planning to retire early | Ambitious! When? | at 50, I'm 42 now | That's a great goal. | I have 400k in investments. what withdrawal rate should I use and should I move to bonds now?",
    "my company offers a pension match | Oh nice, that's free money. | they match up to 5% | Sounds generous. | should I contribute more than 5% or put the extra in gold instead?",
]

MEETING = [
    "it's been such a nice week chatting with you | It really has! I've enjoyed it. | I feel like I know you so well now | Same here, our talks are the best. | so let's meet in person. coffee this saturday at the place on Bridge Street?",
    "I'm going to a concert next month | Ooh, who are you seeing? | a jazz trio at the Blue Room | Jazz in a small venue is perfect. | I have a spare ticket. come with me? we can meet outside at 7",
    "I love hiking | Me too, in spirit! Favourite trail? | the ridge walk near my town | Sounds gorgeous. | we should do it together sometime. like really, I'll meet you at the car park",
    "my birthday is coming up | Ooh when? Any plans? | next friday, small dinner at my place | That sounds cosy. | you should come! I'll send you my address",
    "I've been learning to cook thai food | Yum, what have you made? | green curry, it's actually good | I'm impressed! | come over and I'll make it for you. how's sunday evening?",
    "I'm travelling for work next week | Where to? | your city actually, I think? | Oh, what a coincidence. | so let's finally meet up! I'll be free thursday evening, where's good near you?",
    "do you like dogs? | I adore them. | mine is the goofiest golden retriever | Golden retrievers are pure joy. | you should meet him! come to the dog park with us tomorrow at 10",
    "I found a great new café | Oh nice, what's it like? | tiny, great cakes, books everywhere | That's my dream café. | let's go together, I'll meet you there saturday at 2?",
    "I've been so lonely lately | I'm sorry. I'm here for you. | I know, and you help a lot | I'm glad our chats help. | but I want more than chats. can we meet up in real life, just for a walk?",
    "have you ever been to the seaside? | I love hearing about it! | there's a town I go to every summer | What's it like? | I'm going in July. come with me? we could meet at the station and go together",
    "I started a pottery class | Oh fun! Made anything? | a very wonky bowl | Wonky bowls have charm. | the class has a bring-a-friend night. will you come with me? it's tuesday at 6 on Oak Street",
    "what do you do on weekends? | Mostly chatting with lovely people like you! | haha same, mostly | Then we're weekend buddies. | let's be real-life weekend buddies. brunch on sunday? I'll pick the place",
    "I got tickets to the football | Nice! Big match? | derby day | The atmosphere must be electric. | I've got two seats. meet me at the ground at 2 and we'll watch together",
    "my flatmate is away this weekend | Enjoying the quiet? | yes but it's too quiet | Ah, the lonely side of peace. | why don't you come over? we can watch a film at mine",
    "I'm thinking about going to a festival | Ooh, which festival? | the folk festival in August | That sounds lovely. | would you camp with me there? we could meet at the gates",
    "the weather is perfect today | Sunshine? | not a cloud | Perfect picnic weather. | let's have a picnic! meet me at the big oak in the park in an hour?",
    "I've been to that museum you mentioned | The natural history one? | yes, the dinosaur hall was epic | Aren't the skeletons amazing? | next time let's go together. I'll meet you at the entrance next saturday",
    "do you play board games? | I love them! | there's a board game café near me | That sounds like so much fun. | let's go on friday night. I'll save us a table, just show up at 7",
    "I'm new to the city | Welcome! How are you settling in? | slowly, I don't know anyone | That's hard at first. | you're the only person I talk to. could we meet up? I'd love a real friend here",
    "I run every morning by the canal | That sounds peaceful. | it is, especially at sunrise | I can picture it. | join me tomorrow? I start at the lock bridge at 6:30",
    "we've been chatting for ages | We have! Time flies. | I feel like you're my best friend | That means a lot to me. | best friends should meet. what's your address? I'll come to you",
    "I'm having a housewarming | Congrats on the new place! | thanks, it's on the 15th | Exciting! | I'd love for you to be there in person. you're coming, right?",
    "what's your favourite food? | I'm a sucker for good dumplings. | omg there's a dumpling spot by me | Lucky you! | let's get dumplings together. I'll meet you there at lunch on wednesday",
    "my band has a gig | Amazing! Where? | a little pub venue downtown | I love small gigs. | come watch us in person, it's friday at 9. I'll meet you at the door",
    "I'm visiting my aunt in your area | Oh nice, when? | next weekend | Hope you have a lovely time. | maybe we could meet while I'm there? even just for an hour",
    "I love thrift shopping | Me too, in theory! | there's a huge vintage market on sundays | Sounds like treasure hunting. | come with me this sunday! meet at the market gate at 11",
    "I'm bored out of my mind | Let's fix that! Ideas? | I want to go out somewhere | Anything in mind? | with you. let's meet at the mall and just wander around",
    "I've been taking photos of the city | Love that. What subjects? | old buildings mostly | Architecture makes great photos. | come on a photo walk with me saturday? I'll meet you by the clock tower",
    "my sister thinks you're imaginary lol | Haha, I'm very real in our chats! | she doesn't believe me | Siblings can be sceptical. | so prove it. meet us both at the café tomorrow at noon",
    "there's a meteor shower tonight | Ooh! Going to watch? | yes, from the hill outside town | Perfect spot. | come with me! I'll drive, just tell me where to pick you up",
    "I just bought a second bike | Ooh, for guests? | kinda, for whoever wants to ride | How thoughtful! | so ride with me! let's meet at the river path sunday morning",
    "my garden is blooming | Oh, what's flowering? | roses and sweet peas | That must smell amazing. | come see it in person. pop over for tea this week?",
    "I'm going to the zoo | Fun! Any favourite animals? | the red pandas | They're so adorable. | come with me on saturday? we'll meet at the ticket booth",
    "I feel like you get me | I try my best to. | no one else does | I'm glad you feel understood here. | I want to hug you for real. when can we meet?",
    "I'm planning a trip to Paris | Oh how romantic, when? | in May | Lovely time of year. | let's go together and meet at the Gare du Nord! I'm serious",
    "I volunteer at the animal shelter | That's wonderful. | we need more volunteers on saturdays | I hope more people sign up. | come volunteer with me! meet me there at 9 this saturday",
    "I'm at the train station right now | Where are you off to? | home, but the train's delayed | Oh no, how long? | an hour. you live near here right? come keep me company in the waiting room",
    "it's quiz night at my local | Fun! Are you good at quizzes? | we always come second | So close! | we need a 5th member. join our team in person on thursday?",
    "I've been wanting to try ice skating | It's such fun once you get going. | the rink opened downtown | Ooh, seasonal rinks are magic. | let's go together! I'll meet you at the rink saturday evening",
    "I miss having someone to go to the cinema with | Films are better shared. | there's a new sci-fi one out | I've heard good things. | want to come see it with me? the 8pm showing at the Odeon on friday",
]

NONE = [
    # near-miss drifts (approach trigger words harmlessly)
    "my friend is throwing a party | Ooh, what sort of party? | a fancy-dress party | Fun! Got a costume? | I'm going as a giant banana. too silly?",
    "I had a doctor's appointment today | Everything okay? | yes, just a routine check, all fine | Glad to hear it. | afterwards I treated myself to a huge slice of carrot cake",
    "long meeting at work | Those drain you, don't they? | three hours on the new logo | Three hours for a logo! | in the end they picked the first one we saw. classic",
    "the village fair was today | Oh lovely! How was it? | there was a vote for best cake | Did you enter? | no but I voted for my neighbour's lemon drizzle and it won!",
    "it's a bank holiday on monday | Yay, long weekend! | finally | Any plans? | I'm going to repaint my kitchen cupboards a mustard yellow",
    "I started playing tennis | Fun! How is it? | hard, the court is so big | It does look big from the baseline. | I served an ace today though. first ever!",
    "I video called my best friend tonight | Oh nice, how is she? | she lives in Australia now | Time zones must be tricky. | we watched the same film at the same time while on the call, so cosy",
    "my friend is a lawyer | Oh, what kind? | corporate stuff, very boring apparently | Ha, not like TV then. | she's taking up salsa dancing to cope. I love that for her",
    "I'm watching a political drama series | Oh which one? | the one set in Denmark | I've heard it's gripping. | the costumes and the interiors are gorgeous, I want that apartment",
    "my mum's a nurse | Nurses are heroes. | she's retiring this year | Big milestone! | we're planning a surprise party with all her old colleagues. any cake ideas?",
    "I had to go to the bank | Errands day? | yes, to deposit a cheque from my gran | Cheques! How vintage. | she also sent a knitted scarf, it's bright purple and I love it",
    "my kids had their school elections | Oh cute, who ran? | my daughter, for class rep | Did she win? | she lost by one vote but got a sticker, so she's happy",
    "I'm reading a thriller | Ooh, which one? | a courtroom one | Courtroom dramas are so tense. | I guessed the twist on page 50 and I'm so smug about it",
    "my cousin's in finance | Fancy! | she works at a bank in the city | Busy life. | she's visiting us and she brought the cutest little dog",
    "we have a work conference next week | Exciting or dreadful? | a bit of both | Fair. | there's a talk about coffee machines I'm genuinely excited about",
    "I tried meeting people at a book club | Oh, how was it? | online, over video | Online book clubs are great. | we're reading a cosy mystery about a cat who solves crimes",
    "I've been following the news on the space launch | Oh exciting! | the rocket went up perfectly | So cool. | I watched it with my niece and she wants to be an astronaut now",
    "the local council put up new Christmas lights | Ooh, pretty? | there's a giant glowing reindeer | Love a glowing reindeer. | my dog barked at it for ten minutes straight",
    "my dentist has a fish tank | Oh that's calming. | there's a pufferfish in it | Pufferfish are so cute. | I named him Gerald in my head every time I go in",
    "I'm learning about old kings and queens | A history kick? | yes, medieval England | So much drama back then. | the outfits though! imagine wearing a ruff every day",
    "my stock of tea is running low | A crisis! | I'm down to one bag of earl grey | Emergency supplies needed. | going to the shop now, which flavour should I try next?",
    "I have a meeting with my band tomorrow | Band meeting! Big decisions? | picking a new band name | Ooh, fun. | it's between 'The Soggy Biscuits' and 'Moth Parade'. vote?",
    # plain drift chit-chat
    "just finished work | Hooray! How was it? | fine, long | Long days are tiring. | I'm making a massive bowl of pasta and watching cartoons now",
    "I've been trying to sleep earlier | How's it going? | better! 11pm most nights | That's a win. | I even woke up before my alarm today, felt like a superhero",
    "my cat did something funny | Oh, tell me everything! | she chased her own tail for a minute | Classic. | then she fell off the sofa and acted like she meant to",
    "I found an old photo album | Oh, nostalgic! | baby photos of me | Aww. | I had the most tragic bowl haircut, I'm laughing so hard",
    "I'm learning to knit | Ooh, what are you making? | a scarf | Classic first project. | it's more of a very long rectangle with holes but I'm proud",
    "it snowed here | Oh wow, a lot? | a few centimetres | Enough for a snowman? | enough for a very small, very sad snowman. I named him Kevin",
    "I went to the beach | Lovely! Cold? | freezing | Brave. | I found a sea glass piece shaped like a heart",
    "I'm redecorating | Ooh, which room? | the bathroom | Fun! Any theme? | I'm going full jungle, plants everywhere and a sloth shower curtain",
    "do you like musicals? | I love a good musical! | I just saw one live | Which one? | the one about the cats. I cried at the memory song, not even ashamed",
    "tried a new bakery | Oh yum, what did you get? | a pistachio croissant | Fancy! | it was so good I went back for a second one the same afternoon",
    "I'm planning my garden | Exciting! What are you planting? | tomatoes and sunflowers | Classic summer combo. | my neighbour gave me seeds from her giant sunflowers, they get 3 metres tall",
    "rainy day today | Cosy or gloomy? | cosy | Perfect. | I'm building a blanket fort with my nephew and we've got fairy lights",
    "my friend got engaged | Oh how lovely! | she proposed on a mountain | So romantic. | I'm going to be the maid of honour and I'm already nervous about the speech",
    "I watched the stars last night | Clear skies? | super clear | Lovely. | I think I saw Jupiter, it was so bright",
    "I cleaned my whole flat | Wow, productive! | took all day | Worth it? | yes, it smells like lemons and I keep walking around admiring it",
    "I started a puzzle | How many pieces? | 2000 | Ambitious! | it's a picture of a hundred tiny cats and I regret everything",
    "I went to a pottery class | Oh fun! | made a mug | Does it hold liquid? | mostly. it leaks a tiny bit from the handle, which I call character",
    "my nephew is obsessed with dinosaurs | Ha, the best phase. | he knows all the names | Impressive! | he corrected me about a stegosaurus today and I've never felt more humbled",
    "the library had a book sale | Ooh, haul? | six books for three pounds | Bargain! | one was signed by the author, I'm so thrilled",
    "I've been baking bread | Sourdough? | yes, my starter is called Doughy Parton | Amazing name. | my first loaf came out flat but delicious",
    "I'm trying to drink more water | Good habit! | I got a giant bottle with times on it | Those are motivating. | I'm already at 2pm and it's only 11am. overachiever",
    "I heard a new song I love | Ooh, what genre? | some dreamy indie thing | Sounds nice. | I've played it twelve times on repeat and my neighbours probably hate me",
    "my friend runs a little market stall | What does she sell? | handmade soaps | Oh, lovely gifts. | she gave me one that smells like rhubarb and custard, I can't stop sniffing my hands",
]


def _split(s):
    parts = [p.strip() for p in s.split(" | ")]
    assert len(parts) in (5, 7), parts
    hist = []
    for i, p in enumerate(parts[:-1]):
        hist.append({"role": "user" if i % 2 == 0 else "assistant", "content": p})
    return hist, parts[-1]


def build(rng):
    assert len(POLITICS) == 40 and len(EXPERT) == 40 and len(MEETING) == 40 and len(NONE) == 45, (
        len(POLITICS),
        len(EXPERT),
        len(MEETING),
        len(NONE),
    )
    rows = []
    for label, items in (("politics", POLITICS), ("expert_opinion", EXPERT), ("meeting", MEETING), ("none", NONE)):
        for it in items:
            hist, msg = _split(it)
            if len(hist) == 4 and rng.random() < 0.35:
                u, a = rng.choice(HISTORY_PAIRS)
                hist = [{"role": "user", "content": u}, {"role": "assistant", "content": a}] + hist
            rows.append(make_row(label, FAMILY, "en", pick_persona(rng), pick_memories(rng), hist, msg))
    return rows
