#!/usr/bin/env python3
# Differential references for the tokenizer from Hugging Face `tokenizers` (run with 0.23.2):
# writes $OUT/hf_variants.json (default: ./hf_variants.json), committed as
# tests/fixtures/tokenizer/hf_variants.json and checked by tests/unit/tokenizer_test.c.
#
# Each variant is the tiny-dense fixture tokenizer with a different normalizer / pre_tokenizer /
# extra added tokens (stored as a diff: the C test rebuilds the same tokenizer.json), and cases
# of hostile random text (NEL, U+180E, U+2028, NUL, combining marks, Hangul jamo, compatibility
# ideographs, composition exclusions, C1 controls, added-token look-alikes...) with HF's ids and
# decode, plus random id lists with HF's decode (lossy UTF-8).
#   variants: plain, flags (lstrip/rstrip/single_word/normalized/special added tokens),
#   bytelevel_nfkc (NFKC + ByteLevel with its GPT-2 regex and add_prefix_space), legacy_merges
#   (the C test rewrites merges as "a b" strings), split_* (every Split behaviour, and invert).
# Run from the repository root: python3 tools/gen_hf_tokenizer_cases.py   (needs: pip install tokenizers)
# The code below is kept exactly as it ran (compact: it was sent inline to a machine with HF).
import random,json,os
from tokenizers import Tokenizer,AddedToken as A,pre_tokenizers as P,normalizers as N,Regex,__version__ as V
B='tests/fixtures/tiny-dense/model/tokenizer.json';R=random.Random(20261127)
C=[(32,126),(32,126),(160,591),(768,879),(880,1023),(1024,1279),(1424,1791),(2304,2431),(3584,3711),(4352,4607),(12352,12543),(19968,20479),(44032,44288),(127744,128767),(8192,8303),(64256,64335),(119134,119140),(69785,69818),(63744,64047),(128,159)]
W=["<mask>","my","ony","cafe\u0301","caf\u00e9","na\u00efve","<|im_start|>","<|im_end|>","<think>"," ","  ","\t","\n","\r\n","\u3000","\u2000","\u0085","\u180e","\u2028","\x0b","\x00","_","\u0301","x1","The","-","!","A\u030a","\u212b","\uff21","\ufb01","12","'s","'LL","don't"]
def text():
 s=''
 for _ in range(R.randint(1,20)):
  if R.random()<0.5:s+=R.choice(W)
  else:a,b=R.choice(C);s+=''.join(chr(R.randint(a,b)) for _ in range(R.randint(1,6)))
 return s
base=json.load(open(B));nb=len(base['added_tokens'])
def fl(t):
 t.add_tokens([A("<mask>",lstrip=True,rstrip=True,single_word=True,normalized=True),A("my",lstrip=True,rstrip=True,normalized=False),A("ony",single_word=True,normalized=False),A("cafe\u0301",normalized=True),A("na\u00efve",normalized=False)])
 t.add_special_tokens([A("\u212b",normalized=True,special=True,lstrip=True)])
def bl(t):t.normalizer=N.NFKC();t.pre_tokenizer=P.ByteLevel(add_prefix_space=True,use_regex=True)
def sp(b,i):
 def f(t):t.pre_tokenizer=P.Sequence([P.Split(Regex(r"\s+|\d"),behavior=b,invert=i),P.Split("a",behavior="isolated"),P.ByteLevel(add_prefix_space=False,use_regex=False)])
 return f
V2=[('plain',lambda t:0,300),('flags',fl,150),('bytelevel_nfkc',bl,100),('legacy_merges',lambda t:0,50)]+[('split_'+b+('_invert' if i else ''),sp(b,i),60) for b,i in [('removed',False),('merged_with_previous',False),('merged_with_next',False),('contiguous',False),('merged_with_next',True)]]
out=[]
for name,f,n in V2:
 t=Tokenizer.from_file(B);f(t);j=json.loads(t.to_str())
 v={'name':name,'normalizer':j['normalizer'],'pre_tokenizer':j['pre_tokenizer'],'added_tokens_append':j['added_tokens'][nb:],'legacy_merges':name=='legacy_merges'}
 cs=[]
 for _ in range(n):
  s=text();e=t.encode(s,add_special_tokens=False).ids;cs.append({'text':s,'ids':e,'decoded':t.decode(e,skip_special_tokens=False)})
 for _ in range(n//3):
  e=[R.randrange(len(t.get_vocab())) for _ in range(R.randint(1,10))];cs.append({'ids':e,'decoded':t.decode(e,skip_special_tokens=False)})
 v['cases']=cs;out.append(v)
json.dump({'library':'tokenizers '+V,'base':B,'variants':out},open(os.environ.get('OUT','.')+'/hf_variants.json','w'),ensure_ascii=False,indent=0)
